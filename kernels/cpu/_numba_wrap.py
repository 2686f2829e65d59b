"""How fastbp changes a step of numba's compiler (_optimise_once.py, _inline_once.py):
a method of one of numba's classes replaced by a wrapper of it, once per process, and
left as numba has it when the user asks (an environment variable set to 1)."""
import os


def asked_not_to(variable):
    """Whether the environment variable ``variable`` is "1" (surrounding spaces
    allowed): the user asks for numba's own behaviour."""
    return os.environ.get(variable, "").strip() == "1"


def wrap_method(owner, name, make_wrapper):
    """Replace ``owner.name`` by ``make_wrapper(method)``, whose ``__wrapped__`` is then
    the method numba had; idempotent (a method already wrapped this way is left as it
    is). Returns the wrapper in place."""
    method = getattr(owner, name)
    if getattr(method, "_fastbp_once", False):
        return method
    wrapper = make_wrapper(method)
    wrapper._fastbp_once = True
    wrapper.__wrapped__ = method
    setattr(owner, name, wrapper)
    return wrapper
