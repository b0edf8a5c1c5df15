"""Checks of the numbers a user passes in, each raising ValueError that names the option.

Every numeric option is checked once, where it enters (a constructor, a property setter, the
command line), so a value that can only give NaN or nothing (a learning rate of 0, inf or
NaN, an epsilon of 0, a batch of 0 samples) is refused before any work is done.
"""

import decimal
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


def shown(value):
    """``repr(value)`` for a message, but an integer of thousands of digits said by its
    size."""
    if isinstance(value, numbers.Integral) and abs(value) >= 10**30:
        exponent = int(math.log10(abs(value)))  # (exact for Python ints of any size)
        return f"{'-' if value < 0 else ''}an integer of about 10**{exponent}"
    return repr(value)


def _integral(value):
    """``value`` (a real number) is a whole number (an int, or a float such as 64.0)."""
    if isinstance(value, numbers.Integral):
        return True
    try:
        finite = math.isfinite(value)
    except OverflowError:  # a Fraction beyond float's range: finite all the same
        finite = True
    return finite and value == int(value)


def positive_integer(name, value, most=None):
    """``value`` as an int >= 1 (an integral float such as 64.0 is accepted), and, with
    ``most``, at most that."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not _integral(value)):
        raise ValueError(f"{name} must be a positive integer, got {shown(value)}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {shown(value)}")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most:,}, got {shown(value)}")
    return int(value)


def positive_number(name, value, dtype=None):
    """``value`` as a finite float > 0; with ``dtype``, also finite and > 0 in that dtype
    (1e-50 is 0 in float32, 1e39 is infinity). An integer beyond float64's range (10**400)
    is refused as not finite, by name."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    try:
        number, note = float(value), " (it must be finite)"  # NaN and inf get the note
    except OverflowError:  # (math.isfinite and every float conversion raise it)
        number, note = math.inf if value > 0 else -math.inf, " (beyond the range of float64)"
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number, got {shown(value)}"
                         f"{'' if number <= 0 else note}")
    if dtype is not None:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: said below
            rounded = np.dtype(dtype).type(number)
        if not (np.isfinite(rounded) and rounded > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}, which is "
                             f"{rounded} in {np.dtype(dtype).name}")
    return number


def fraction(name, value, low_open=False, high_closed=False):
    """``value`` as a float in [0, 1) (``(0, ...`` with ``low_open``, ``..., 1]`` with
    ``high_closed``)."""
    interval = f"{'(' if low_open else '['}0, 1{']' if high_closed else ')'}"
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and (0 < value if low_open else 0 <= value)
          and (value <= 1 if high_closed else value < 1))
    if not ok:
        raise ValueError(f"{name} must be a number in {interval}, got {shown(value)}")
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
    epochs is first 0 in ``dtype`` (the optimizer would refuse it then), or None.

    In constant time, whatever ``epochs``: a loop over the epochs took a microsecond each
    (``--epochs 1000000000 --lr-decay 1`` hung before training). A decay of 1 never reaches
    0; otherwise the epoch is estimated with logarithms and the first one at which the rate
    is 0 in ``dtype`` found near it, each rate looked at computed to 40 digits (``rate *
    decay**epoch``), then rounded to float64 and to ``dtype``, as the trainer holds it. In
    float64 the rate, a Python float, goes through float64's subnormals, where those last
    (at most 54) epochs are multiplied out as the trainer multiplies them: a decay above
    1/2 leaves its smallest, 5e-324, as it is, so that the rate never reaches 0."""
    dtype = np.dtype(dtype)
    if not decay < 1 or epochs < 1:  # (a decay of 1 leaves the rate as it is)
        return None
    if not (rate > 0 and decay > 0):
        return 1, rate * decay
    context = decimal.Context(prec=40, Emin=-10**9, Emax=10**9)
    start, factor = decimal.Decimal(rate), decimal.Decimal(decay)

    def after(epoch):  # the rate after ``epoch`` epochs, as a float
        return float(context.multiply(start, context.power(factor, epoch)))

    def first(reached, limit):
        """The first epoch after which ``reached(epoch)``, the rate being about ``limit``
        then, or None within ``epochs``: ``reached`` only turns true (the rate decreases)."""
        if not reached(epochs):
            return None
        estimate = (math.log(rate) - math.log(limit)) / -math.log(decay)
        guess = epochs if not estimate < epochs else max(math.ceil(estimate), 1)
        low, high = 0, epochs  # not reached after epoch ``low`` (0: the start), after ``high``
        window = 2 + guess // 10**9  # (the estimate's rounding, for a decay near 1)
        if low < guess - window and not reached(guess - window):
            low = guess - window
        if guess + window < high and reached(guess + window):
            high = guess + window
        while high - low > 1:  # a few steps when the estimate holds; log2(epochs) at most
            middle = (low + high) // 2
            if reached(middle):
                high = middle
            else:
                low = middle
        return high

    normal = float(np.finfo(np.float64).tiny)
    smallest = float(np.finfo(dtype).smallest_subnormal)
    if smallest >= normal:  # float32: 0 below 2**-150, where float64 is exact enough
        epoch = first(lambda epoch: not dtype.type(after(epoch)) > 0, smallest / 2)
        return None if epoch is None else (epoch, after(epoch))
    if decay > 0.5:  # 5e-324 * decay rounds to 5e-324
        return None
    subnormal = first(lambda epoch: after(epoch) < normal, normal)
    if subnormal is None:
        return None
    rate = after(subnormal - 1)
    for epoch in range(subnormal, epochs + 1):  # each at least halves it: 54 at most
        rate *= decay
        if not dtype.type(rate) > 0:
            return epoch, rate
    return None


def beyond_range(where, value, dtype, sample=None):
    """The ValueError for a finite ``value`` that ``dtype`` cannot hold (see
    :func:`first_beyond`)."""
    dtype = np.dtype(dtype)
    at = "" if sample is None else f" (sample {sample})"
    shown = repr(value)
    if isinstance(value, np.floating):  # a long double's digits, not "np.longdouble('1e+39')"
        shown = repr(float(value)) if value.dtype.itemsize <= 8 else str(value)
    return ValueError(f"{where}: {shown}{at} is beyond the range of {dtype.name} (largest "
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
