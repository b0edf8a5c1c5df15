"""Checks of the numbers a user passes in, each raising ValueError that names the option.

Every numeric option is checked once, where it enters (a constructor, a property setter, the
command line), so a value that can only give NaN or nothing (a learning rate of 0, inf or
NaN, an epsilon of 0, a batch of 0 samples) is refused before any work is done.
"""

import math
import numbers
from operator import attrgetter

import numpy as np


def flag(name, value):
    """``value`` as a bool: True or False (NumPy's too, or the integers 1 and 0); anything
    else, which Python would take by its truth (the string "False" is true), is refused."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                               and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {type(value).__name__} {value!r:.60}")


def positive_integer(name, value):
    """``value`` as an int >= 1 (an integral float such as 64.0 is accepted)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value != int(value)):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return int(value)


def positive_number(name, value, dtype=None):
    """``value`` as a finite float > 0; with ``dtype``, also finite and > 0 in that dtype
    (1e-50 is 0 in float32, 1e39 is infinity)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        finite = "" if value <= 0 else " (it must be finite)"  # NaN and inf get the note
        raise ValueError(f"{name} must be a positive number, got {value!r}{finite}")
    if dtype is not None:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: said below
            rounded = np.dtype(dtype).type(value)
        if not (np.isfinite(rounded) and rounded > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}, which is "
                             f"{rounded} in {np.dtype(dtype).name}")
    return float(value)


def fraction(name, value, low_open=False, high_closed=False):
    """``value`` as a float in [0, 1) (``(0, ...`` with ``low_open``, ``..., 1]`` with
    ``high_closed``)."""
    interval = f"{'(' if low_open else '['}0, 1{']' if high_closed else ')'}"
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and (0 < value if low_open else 0 <= value)
          and (value <= 1 if high_closed else value < 1))
    if not ok:
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def first_non_finite(array):
    """The index (a tuple) of the first NaN or infinite element of ``array``, or None."""
    array = np.asarray(array)
    if array.dtype.kind not in "fc":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), array.shape))


def first_beyond(array, dtype, scale=1.0):
    """The index (a tuple) of the first element of ``array`` that is finite but, times
    ``scale``, infinite in ``dtype`` (a float64 number beyond float32's range, which a cast
    makes infinite; a pixel times a huge scale), or None. Its largest and smallest elements
    are looked at first, and the array searched only if one of them is beyond; nothing to
    look for without a scale unless ``array`` has wider floats than ``dtype``."""
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if not array.size or array.dtype.kind not in "biuf":
        return None
    if scale == 1 and (array.dtype.kind != "f" or array.dtype.itemsize <= dtype.itemsize):
        return None  # a cast to dtype keeps every finite number finite
    with np.errstate(over="ignore", invalid="ignore"):
        extreme = max(abs(float(array.max())), abs(float(array.min())))  # NaN: looked for
        if np.isfinite(dtype.type(extreme * abs(scale))):
            return None
        values = array if array.dtype.kind == "f" and array.dtype.itemsize >= 8 \
            else array.astype(np.float64)  # a long double kept: beyond float64's range
        beyond = np.isfinite(values) & ~np.isfinite((values * scale).astype(dtype))
    if not beyond.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(beyond)), array.shape))


def decayed_to_zero(rate, decay, epochs, dtype):
    """``(epoch, rate)`` where ``rate`` multiplied by ``decay`` after each of ``epochs``
    epochs is first 0 in ``dtype`` (the optimizer would refuse it then), or None."""
    for epoch in range(1, epochs + 1):
        rate *= decay
        if not np.dtype(dtype).type(rate) > 0:
            return epoch, rate
    return None


def beyond_range(where, value, dtype, sample=None):
    """The ValueError for a finite ``value`` that ``dtype`` cannot hold (see
    :func:`first_beyond`)."""
    dtype = np.dtype(dtype)
    at = "" if sample is None else f" (sample {sample})"
    return ValueError(f"{where}: {value!r}{at} is beyond the range of {dtype.name} (largest "
                      f"{np.finfo(dtype).max:.4g}), in which the graph computes: it would be "
                      "infinite")


def kernel_numbers(array, dtype):
    """``array`` in a dtype the compiled kernels take: half and long-double floats (which
    Numba does not compile for) cast to ``dtype``, numbers in the other byte order (a
    big-endian file's) in this machine's, every other numeric dtype as it is."""
    if array.dtype.kind == "f" and array.dtype.itemsize not in (4, 8):
        return array.astype(dtype)
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def as_array(values, what):
    """``np.asarray(values)``, with a ragged sequence (samples of different shapes) refused
    in words that name ``what`` rather than in NumPy's."""
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{what} are not an array: their samples differ in shape or are not "
                         f"numbers ({error})") from None


def _same(current, value):
    try:
        return current is value or bool(current == value)
    except Exception:  # (arrays, say: not a yes or no)
        return False


def set_once(name, refusal, attribute=None, same_taken=False):
    """A property over ``attribute`` (``_<name>``), given once (by the constructor);
    assigned again, an AttributeError of ``refusal(owner)``'s words (with ``same_taken``,
    not when it is the value it has, which changes nothing). (A property over a
    private attribute, not a descriptor writing into ``__dict__``: an object whose
    ``__dict__`` is touched reads every attribute slower, 40 ns against 25 in CPython 3.11.)
    What owns it may still change the private attribute itself."""
    attribute = attribute or "_" + name

    def set_value(owner, value):
        if hasattr(owner, attribute):
            if not (same_taken and _same(getattr(owner, attribute), value)):
                raise AttributeError(refusal(owner))
            return
        setattr(owner, attribute, value)

    return property(attrgetter(attribute), set_value)
