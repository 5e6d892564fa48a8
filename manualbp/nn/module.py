"""``HandDerived``: what every ``manualbp.nn`` module adds to its ``torch.nn`` twin, its name when printed."""

__all__ = ["HandDerived"]


class HandDerived:
    """Mixed into every ``manualbp.nn`` module ahead of its ``torch.nn`` twin (``class Linear(HandDerived,
    torch.nn.Linear)``). Its ``repr``, and so ``print(model)``, names the layer ``manualbp.Linear(…)``: after
    ``manualbp.convert(model)`` the printout shows which layers run manualbp's backward passes and which are still
    torch.nn's. ``isinstance(module, manualbp.nn.HandDerived)`` finds them. Nothing else changes."""

    def __repr__(self):
        return "manualbp." + super().__repr__()
