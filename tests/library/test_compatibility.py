"""A converted model in every PyTorch subsystem a user combines layers with, against the same model in torch.nn.

Each test builds one small classifier, ``Linear–ReLU–Linear–Tanh–Linear`` with a cross-entropy loss, in torch.nn,
converts a deep copy with ``manualbp.convert`` (its Sequential fuses Linear+ReLU and Linear+Tanh into one node
each), runs both through one subsystem and compares what comes out: outputs, and gradients wherever the subsystem
has them. The README's compatibility table lists these tests, one row each.
"""

import copy
import io
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import func

import manualbp

IN, HIDDEN, CLASSES, BATCH = 6, 8, 4, 5


def make_models(dtype=torch.float32, seed=0):
    """``(manualbp model, torch.nn model)``: the same parameters, the first converted from a deep copy. The
    parameters are drawn from ``seed``, the global generator left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = torch.nn.Sequential(
            torch.nn.Linear(IN, HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN, HIDDEN),
            torch.nn.Tanh(),
            torch.nn.Linear(HIDDEN, CLASSES),
        ).to(dtype)
    manual = manualbp.convert(copy.deepcopy(reference))
    assert type(manual) is manualbp.nn.Sequential
    return manual, reference


def make_batch(dtype=torch.float32, seed=1):
    """``(x, y)``: inputs ``(BATCH, IN)`` and class indices ``(BATCH,)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, IN, generator=generator).to(dtype)
    y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    return x, y


def run_both(run, dtype=torch.float32, compare=torch.testing.assert_close):
    """``run(model, loss)`` for the converted model with manualbp's cross-entropy and for the torch.nn model with
    torch's; ``compare`` the results (default: close at the dtype's tolerance) and return both."""
    manual, reference = make_models(dtype)
    manual_result = run(manual, manualbp.nn.CrossEntropyLoss())
    reference_result = run(reference, torch.nn.CrossEntropyLoss())
    compare(manual_result, reference_result)
    return manual_result, reference_result


def forward_backward(model, loss, x, y, parameters=None):
    """The logits, the loss, and the gradients of the loss with respect to x and to ``parameters`` (default: the
    model's)."""
    x = x.detach().requires_grad_()
    logits = model(x)
    value = loss(logits, y)
    return logits, value, torch.autograd.grad(value, [x, *(model.parameters() if parameters is None else parameters)])


def params(model):
    return dict(model.named_parameters())


def test_torch_func_grad_and_functional_call():
    x, y = make_batch()

    def run(model, loss):
        # other parameters than the model's own, so that functional_call visibly swaps them in
        shifted = {name: p.detach() + 0.1 for name, p in params(model).items()}

        def loss_of(parameters, x):
            return loss(func.functional_call(model, parameters, (x,)), y)

        return func.functional_call(model, shifted, (x,)), func.grad(loss_of, argnums=(0, 1))(shifted, x)

    run_both(run)


def test_torch_func_vmap_per_sample_outputs_and_gradients():
    x, y = make_batch()

    def run(model, loss):
        def sample_loss(parameters, x, y):  # one unbatched sample: x (IN,), y ()
            return loss(func.functional_call(model, parameters, (x,)), y)

        detached = {name: p.detach() for name, p in params(model).items()}
        return func.vmap(model)(x), func.vmap(func.grad(sample_loss), in_dims=(None, 0, 0))(detached, x, y)

    run_both(run)


@pytest.mark.parametrize("transform", [func.jacrev, func.jacfwd], ids=["jacrev", "jacfwd"])
def test_torch_func_jacobians(transform):
    x, _ = make_batch(torch.float64)
    run_both(lambda model, loss: transform(model)(x), torch.float64)


def test_torch_func_jvp():
    x, _ = make_batch(torch.float64)
    tangent = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    run_both(lambda model, loss: func.jvp(model, (x,), (tangent,)), torch.float64)


def test_torch_func_hessian_of_the_loss():
    x, y = make_batch(torch.float64)
    hessian, _ = run_both(lambda model, loss: func.hessian(lambda x: loss(model(x), y))(x), torch.float64)
    assert hessian.abs().sum() > 0  # tanh and the softmax give the loss curvature


def test_forward_ad_dual_tensors_through_inputs_and_parameters():
    x, y = make_batch(torch.float64)
    generator = torch.Generator().manual_seed(3)
    _, reference = make_models(torch.float64)
    tangents = {name: torch.randn(p.shape, generator=generator, dtype=p.dtype) for name, p in params(reference).items()}
    x_tangent = torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def run(model, loss):
        with fwAD.dual_level():
            dual = {name: fwAD.make_dual(p.detach(), tangents[name]) for name, p in params(model).items()}
            logits = func.functional_call(model, dual, (fwAD.make_dual(x, x_tangent),))
            logits, value = fwAD.unpack_dual(logits), fwAD.unpack_dual(loss(logits, y))
            return logits.primal, logits.tangent, value.primal, value.tangent

    manual_result, _ = run_both(run, torch.float64)
    assert manual_result[1] is not None and manual_result[3] is not None


def test_double_backward_gradient_penalty():
    x, y = make_batch(torch.float64)

    def run(model, loss):
        x_leaf = x.clone().requires_grad_()
        value = loss(model(x_leaf), y)
        (grad_x,) = torch.autograd.grad(value, x_leaf, create_graph=True)
        penalty = grad_x.square().sum()  # a gradient penalty: its gradient takes the second derivatives
        return torch.autograd.grad(value + penalty, [x_leaf, *model.parameters()])

    run_both(run, torch.float64)


@pytest.mark.slow  # compiles or exports a model: seconds
def test_torch_compile_fullgraph():
    x, y = make_batch()
    torch.compiler.reset()

    def run(model, loss):
        if not isinstance(model, manualbp.nn.Sequential):
            return forward_backward(model, loss, x, y)  # torch.nn's own model, run eagerly

        def step(x):
            logits = model(x)
            return logits, loss(logits, y)

        x_leaf = x.clone().requires_grad_()
        logits, value = torch.compile(step, fullgraph=True)(x_leaf)  # fullgraph: a graph break raises
        return logits, value, torch.autograd.grad(value, [x_leaf, *model.parameters()])

    run_both(run)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict-dynamo"])
def test_torch_export_and_run_the_exported_program(strict):
    x, _ = make_batch()
    other, _ = make_batch(seed=4)  # the program is not specialised to the example's values

    def run(model, loss):
        program = torch.export.export(model, (x,), strict=strict).module()
        return program(x), program(other)

    run_both(run)


@pytest.mark.slow  # compiles or exports a model: seconds
def test_onnx_export_dynamo_run_by_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    x, _ = make_batch()
    other, _ = make_batch(seed=4)

    def run(model, loss):
        if isinstance(model, manualbp.nn.Sequential):
            path = tmp_path / "model.onnx"
            torch.onnx.export(model.eval(), (x,), dynamo=True, verbose=False).save(str(path))
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return [torch.from_numpy(session.run(None, {name: t.numpy()})[0]) for t in (x, other)]
        return [model(t).detach() for t in (x, other)]  # torch.nn's own model, run eagerly

    run_both(run)


def test_jit_trace_with_check_trace():
    x, y = make_batch()
    other, other_y = make_batch(seed=4)

    def run(model, loss):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the test is that it works
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, x, check_trace=True)
        return forward_backward(traced, loss, other, other_y)

    run_both(run)


class _ManualbpLeaves(torch.fx.Tracer):
    """FX traces into every module that is not torch.nn's own; manualbp's are kept as calls, as torch.nn's are."""

    def is_leaf_module(self, module, qualified_name):
        ours = type(module).__module__.startswith("manualbp.nn.") and not isinstance(module, manualbp.nn.Sequential)
        return ours or super().is_leaf_module(module, qualified_name)


def test_torch_fx_with_a_tracer_that_keeps_manualbps_modules_as_leaves():
    x, y = make_batch()
    other, other_y = make_batch(seed=4)

    def run(model, loss):
        traced = torch.fx.GraphModule(model, _ManualbpLeaves().trace(model))
        if isinstance(model, manualbp.nn.Sequential):  # every layer one call in the graph, run by manualbp
            calls = [node.target for node in traced.graph.nodes if node.op == "call_module"]
            assert calls == [name for name, _ in model.named_children()]
        return forward_backward(traced, loss, other, other_y)

    run_both(run)
    with pytest.raises(torch.fx.proxy.TraceError):  # FX's default tracer goes inside manualbp's modules
        torch.fx.symbolic_trace(manualbp.convert(torch.nn.Sequential(torch.nn.Linear(3, 2))))


def test_activation_checkpointing():
    x, y = make_batch()

    def run(model, loss):
        first, second = model[:2], model[2:]  # the first block recomputed in the backward pass

        def checkpointed(x):
            return second(torch.utils.checkpoint.checkpoint(first, x, use_reentrant=False))

        return forward_backward(checkpointed, loss, x, y, model.parameters())

    run_both(run)


def as_accurate_as_torch(low_precision, x, y):
    """A ``compare`` for results in ``low_precision`` (bf16 or fp16 arithmetic): the outputs of the forward pass, the
    same arithmetic as torch's, bit for bit; every gradient within two units of the dtype's rounding of the float64
    result (normwise: max error over max magnitude), as torch's own are. manualbp writes f′ as tensor operations,
    so it rounds a product such as g·(1 − a²) more often than torch's fused kernels, which compute in float32 and
    round once: its gradients differ from torch's in the last bits, not in accuracy."""
    tolerance = 2 * torch.finfo(low_precision).eps
    _, reference = make_models(torch.float64)
    exact = forward_backward(reference, torch.nn.CrossEntropyLoss(), x.double(), y)

    def compare(manual_result, reference_result):
        (logits, loss, grads), (torch_logits, torch_loss, torch_grads) = manual_result, reference_result
        assert torch.equal(logits, torch_logits) and torch.equal(loss, torch_loss)
        for name, grad, torch_grad, exact_grad in zip(range(len(grads)), grads, torch_grads, exact[2], strict=True):
            assert grad.dtype == torch_grad.dtype
            scale = exact_grad.abs().max()
            error, torch_error = ((g.double() - exact_grad).abs().max() / scale for g in (grad, torch_grad))
            assert error <= tolerance, f"gradient {name}: error {error:.1e} (torch's {torch_error:.1e})"

    return compare


def test_autocast_bfloat16_on_cpu():
    x, y = make_batch()

    def run(model, loss):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward_backward(model, loss, x, y)

    (logits, value, _), _ = run_both(run, compare=as_accurate_as_torch(torch.bfloat16, x, y))
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32  # linear layers in bf16, the loss in fp32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_parameters(dtype):
    x, y = make_batch(dtype)
    compare = as_accurate_as_torch(dtype, x, y)
    (_, _, grads), _ = run_both(lambda model, loss: forward_backward(model, loss, x, y), dtype, compare)
    assert all(g.dtype == dtype for g in grads)


def test_meta_device_init_then_to_empty():
    x, y = make_batch()
    with torch.device("meta"):  # built (and converted) without memory, as for a model too large to initialise
        manual_on_meta, reference_on_meta = make_models()

    def run(model, loss):
        fresh = manual_on_meta if isinstance(model, manualbp.nn.Sequential) else reference_on_meta
        assert all(p.is_meta for p in fresh.parameters())
        fresh.to_empty(device="cpu")
        fresh.load_state_dict(model.state_dict())
        assert type(fresh) is type(model)
        return forward_backward(fresh, loss, x, y)

    run_both(run)


def test_distributed_data_parallel_single_process_gloo(tmp_path):
    distributed = torch.distributed
    if not distributed.is_available() or not distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    x, y = make_batch()

    def run(model, loss):
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss(ddp(x), y).backward()  # DDP all-reduces the parameters' .grad during the backward pass
        return [p.grad for p in model.parameters()]

    distributed.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rendezvous'}")
    try:
        run_both(run)
    finally:
        distributed.destroy_process_group()


def test_module_forward_and_backward_hooks_fire_as_in_torch():
    x, y = make_batch()

    def run(model, loss):
        fired, handed = [], []  # (kind, module name) in order; what each hook was handed

        def recorder(kind, name):
            def hook(module, *arguments):  # (args,), (args, output) or (grad_input, grad_output)
                fired.append((kind, name))
                handed.append(arguments)

            return hook

        for name, module in model.named_modules():
            module.register_forward_pre_hook(recorder("pre", name))
            module.register_forward_hook(recorder("forward", name))
            module.register_full_backward_hook(recorder("backward", name))
        loss(model(x.clone().requires_grad_()), y).backward()
        return fired, handed

    def compare(manual_result, reference_result):  # the same hooks, in the same order, handed the same tensors
        assert manual_result[0] == reference_result[0]
        torch.testing.assert_close(manual_result[1], reference_result[1])

    (fired, _), _ = run_both(run, compare=compare)
    assert len(fired) == 3 * len(list(make_models()[0].modules()))  # every hook of every module, the model's too


def test_torch_save_whole_model_and_load_with_weights_only_false():
    x, y = make_batch()

    def run(model, loss):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
        return forward_backward(loaded, loss, x, y)

    run_both(run)
