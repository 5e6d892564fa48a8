"""The package's dependencies: the library needs torch alone; the trainer's (torchvision, TensorBoard, tqdm,
matplotlib, and nvidia-ml-py for a GPU run's utilisation line) are the ``manualbp[trainer]`` extra, and nothing the
library runs loads them.

A child Python stands for an environment with torch alone: the trainer's packages are made unimportable there
(``sys.modules[name] = None``, which makes ``import name`` raise ImportError). torch itself imports tqdm when it
is installed (torch.hub) and goes on without it, as in a torch-only install; so does pynvml (nvidia-ml-py's module),
which torch.cuda imports where it can.
"""

import importlib.metadata
import re
import subprocess
import sys

import pytest

# the modules of the trainer's extra, by the names they are imported as (nvidia-ml-py's is pynvml)
TRAINER_ONLY = ("matplotlib", "pynvml", "tensorboard", "torchvision", "tqdm")
DISTRIBUTION = {"pynvml": "nvidia-ml-py"}
WITHOUT_THE_TRAINERS_PACKAGES = f"import sys\nsys.modules.update(dict.fromkeys({TRAINER_ONLY!r}))\n"


def run_without_the_trainers_packages(code):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_TRAINERS_PACKAGES + code], capture_output=True, text=True, timeout=600
    )


def test_the_library_depends_on_torch_alone_and_the_trainer_on_its_extra():
    core, extra = [], []
    for requirement in importlib.metadata.requires("manualbp"):
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group()
        (extra if re.search(r"extra == ['\"]trainer['\"]", requirement) else core).append(name)
    assert core == ["torch"]
    assert sorted(extra) == sorted(DISTRIBUTION.get(name, name) for name in TRAINER_ONLY)


@pytest.mark.slow  # a child Python that imports torch: seconds
def test_manualbp_imports_without_the_trainers_packages():
    result = run_without_the_trainers_packages("import manualbp, manualbp.nn, manualbp.functional, manualbp.fast")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # a child Python that imports torch: seconds
def test_the_trainer_does_need_them():  # so the test above would fail if the library imported one of them
    result = run_without_the_trainers_packages("import manualbp_trainer.loop")
    assert result.returncode == 1 and "ModuleNotFoundError: import of " in result.stderr


@pytest.mark.slow
def test_python_dash_m_manualbp_check_runs_without_the_trainers_packages():
    result = run_without_the_trainers_packages(
        "import runpy\nsys.argv = ['manualbp.check']\nrunpy.run_module('manualbp.check', run_name='__main__')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("within tolerance")
