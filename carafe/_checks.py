"""Checks of the plain integer arguments, shared by :func:`carafe.carafe`
and the modules. The op's own argument checks (tensors, their dtypes,
devices and sizes, kernel_size, group_size, scale_factor) are written once,
in C++ (check_forward_args in csrc/carafe.cpp): the kernels run them, and
the fake kernels through the op ``carafe::check_args``."""

INT64_MAX = 2**63 - 1


def require_int(owner: str, name: str, value) -> None:
    """TypeError unless value is an int (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")


def require_sizes(owner: str, odd: tuple = (), **values) -> None:
    """Every value an int >= 1, odd where its name is in `odd`: a
    TypeError or ValueError naming the first argument that is not."""
    for name, value in values.items():
        require_int(owner, name, value)
    for name, value in values.items():
        if value < 1 or (name in odd and value % 2 == 0):
            kind = "an odd integer" if name in odd else "an integer"
            raise ValueError(f"{owner}: {name} must be {kind} >= 1, got {value}")
