"""Loihi fixed-point neuron and synapse arithmetic: the single numpy definition.

Everything in neurodeploy that must agree bit-for-bit with Lava 0.10.0 ``fixed_pt``
(``Loihi2SimCfg(select_tag="fixed_pt")``) calls into this module: the Lava process models in
:mod:`neurodeploy.backends.lava.models`, the native numpy engine and the quantizer. The semantics
follow ``/work/shared/notes/lava-fixed-point.md`` (cited as "the note" below); section numbers
refer to it.

Conventions
-----------
* All arrays are ``np.int64`` holding values that emulate Lava's ``np.int32`` storage exactly:
  results are passed through :func:`wrap_int32` after every arithmetic stage at which Lava's int32
  arrays would overflow (note §6, §8). Without those casts a large-input network diverges from
  Lava (note §7, case C).
* Neuron state is batched: ``u`` and ``v`` have shape ``[B, *shape]``; per-neuron parameters have
  shape ``shape`` (or are scalars) and broadcast over the batch axis. Nothing here mutates its
  inputs.
* Time is not modelled here. The caller owns the one-step delay of every connection layer
  (note §1): a spike emitted at Lava step ``t`` reaches the next neuron layer at ``t + 1``.

Fixed-point constants (note §4.1)
---------------------------------
``STATE_BITS``  width of ``u`` and ``v`` (24); ``STATE_MAX = 2**23``.
``DECAY_SHIFT`` decays are multiplications by ``(4096 - d) / 4096`` (12).
``VTH_SHIFT``   effective threshold is ``vth << 6``.
``ACT_SHIFT``   synaptic input enters ``u`` as ``a_in << 6``.
``DS_OFFSET``   added to ``du`` (1): ``du = 0`` still decays ``u`` by 1/4096 per step.
``DM_OFFSET``   added to ``dv`` (0).
``WEIGHT_BITS`` Dense weights are clipped to 8 bits before LSB truncation (note §2.1).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Literal

import numpy as np

STATE_BITS = 24
DECAY_SHIFT = 12
VTH_SHIFT = 6
ACT_SHIFT = 6
DS_OFFSET = 1
DM_OFFSET = 0
WEIGHT_BITS = 8

DECAY_UNITY = 1 << DECAY_SHIFT
#: ``2**23``. ``u`` is wrapped once by ``2**24`` when it leaves ``(-STATE_MAX, STATE_MAX]``.
STATE_MAX = 1 << (STATE_BITS - 1)
#: ``v`` saturates to ``[V_MIN, V_MAX]`` (symmetric, note §4.2 step 4).
V_MAX = STATE_MAX - 1
V_MIN = -(STATE_MAX - 1)

#: Keys that :func:`lif_step` adds to its ``stats`` dict.
STAT_U_WRAP = "u_wrap"
STAT_V_CLIP = "v_clip"

ResetMode = Literal["zero", "subtract"]

_SIGN_MODES = {
    "mixed": "mixed",
    "excitatory": "excitatory",
    "exc": "excitatory",
    "inhibitory": "inhibitory",
    "inh": "inhibitory",
    "null": "null",
}


#: Loihi's voltage register counts a spiking neuron's refractory steps in units of ``1 << 7``
#: (nengo-loihi#170: spike probes look for ``refractory period * 128``; lava-nc/lava#282: "the
#: state of the voltage on Loihi is in fact 128 after a spike", without effect on later steps).
REFRACTORY_UNIT = 1 << 7


def chip_probe_voltage(v, spikes, refractory_steps: int = 1) -> np.ndarray:
    """``v`` as a voltage probe on the Loihi chip reads it: at a step where the neuron spiked,
    the register holds the refractory count ``refractory_steps << 7`` instead of the reset
    value that Lava's CPU models (and this module) keep. Only the probe's view differs: from
    the next step on both evolve identically."""
    v = np.asarray(v)
    return np.where(np.asarray(spikes) != 0, refractory_steps * REFRACTORY_UNIT, v)


def wrap_int32(x) -> np.ndarray:
    """Return ``x`` as int64 wrapped modulo ``2**32`` into the int32 range (Lava's storage)."""
    return np.asarray(x, dtype=np.int64).astype(np.int32).astype(np.int64)


def shift_exp(x, e: int) -> np.ndarray:
    """Scale ``x`` by ``2**e`` with shifts: ``x << e`` for ``e > 0``, else ``x >> -e`` (floor).

    This is how Lava applies ``weight_exp`` (to the accumulated sum, note §2.2) and ``bias_exp``.
    """
    x = np.asarray(x, dtype=np.int64)
    e = int(e)
    return np.left_shift(x, e) if e > 0 else np.right_shift(x, -e)


def _normalise_sign_mode(sign_mode) -> str:
    name = getattr(sign_mode, "name", sign_mode)  # accepts lava.utils.weightutils.SignMode
    key = str(name).lower()
    if key not in _SIGN_MODES:
        raise ValueError(
            f"unknown sign_mode {sign_mode!r}; expected one of "
            "'mixed', 'excitatory', 'inhibitory', 'null' or a Lava SignMode"
        )
    return _SIGN_MODES[key]


def determine_sign_mode(w) -> str:
    """Sign mode Lava derives from (int32-stored, unclipped) weights: note §2.1 step 1."""
    w = np.asarray(w)
    if w.size == 0 or w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def effective_dense_weights(w, num_weight_bits: int = 8, sign_mode=None) -> np.ndarray:
    """Weights exactly as Lava's bit-accurate Dense uses them (note §2.1).

    Steps: store as int32 (floats truncate toward zero, as Lava's Var initialisation does);
    determine the sign mode if not given; clip to 8 bits (``[-256, 255]`` mixed, ``[0, 255]``
    excitatory, ``[-255, 0]`` inhibitory); zero the ``8 - num_weight_bits + mixed`` LSBs with an
    arithmetic shift (inhibitory weights are shifted while negated, so they round toward zero).

    ``sign_mode`` may be None, ``"mixed"``, ``"excitatory"``, ``"inhibitory"`` (or ``"exc"``,
    ``"inh"``), ``"null"`` or a ``lava.utils.weightutils.SignMode`` member. ``"null"`` reproduces
    Lava's behaviour for an explicit ``SignMode.NULL`` (clipped like excitatory).
    Returns int64 with the same shape as ``w``.
    """
    if not 1 <= int(num_weight_bits) <= WEIGHT_BITS:
        raise ValueError(f"num_weight_bits must be in 1..{WEIGHT_BITS}, got {num_weight_bits}")
    w = wrap_int32(np.trunc(w) if np.issubdtype(np.asarray(w).dtype, np.floating) else w)
    mode = determine_sign_mode(w) if sign_mode is None else _normalise_sign_mode(sign_mode)
    mixed = int(mode == "mixed")
    inhibitory = mode == "inhibitory"
    if inhibitory:
        w = -w
    w = np.clip(w, -(1 << WEIGHT_BITS) * mixed, (1 << WEIGHT_BITS) - 1)
    k = WEIGHT_BITS - int(num_weight_bits) + mixed
    w = np.left_shift(np.right_shift(w, k), k)
    return -w if inhibitory else w


def dense_fixed(s_in, w_eff, *, weight_exp: int = 0, num_message_bits: int = 0) -> np.ndarray:
    """Synaptic input one bit-accurate Dense step produces: ``shift_exp(W_eff @ s, weight_exp)``.

    ``s_in``: ``[B, n_in]`` input messages; ``w_eff``: ``[n_out, n_in]`` from
    :func:`effective_dense_weights`. With ``num_message_bits == 0`` (binary spikes) Lava casts the
    input to bool, so any non-zero entry -- including ``-1`` and counts ``> 1`` -- counts as one
    spike. With ``num_message_bits > 0`` (graded) it is a plain integer dot product, computed in
    int32 by Lava, so the sum wraps before the exponent shift. The result is wrapped to int32 (the
    Dense output port type). Returns ``[B, n_out]``.

    The caller applies the one-step delay: the value computed from ``s_in`` at step ``t`` is what
    the post-synaptic neurons receive at step ``t + 1`` (note §1).
    """
    s = np.asarray(s_in)
    w = np.asarray(w_eff, dtype=np.int64)
    if int(num_message_bits) > 0:
        acc = wrap_int32(wrap_int32(s) @ w.T)
    else:
        acc = (s != 0).astype(np.int64) @ w.T
    return wrap_int32(shift_exp(acc, weight_exp))


def decay(x, d) -> np.ndarray:
    """``x * (4096 - d) / 4096`` rounded toward zero (note §4.1 ``trunc0``).

    ``d`` is the *effective* decay constant (Lava adds ``DS_OFFSET`` for ``u``; see
    :func:`lif_step`); it may be a scalar or broadcast against ``x``.
    """
    p = np.asarray(x, dtype=np.int64) * (DECAY_UNITY - np.asarray(d, dtype=np.int64))
    return np.sign(p) * np.right_shift(np.abs(p), DECAY_SHIFT)


def effective_bias(bias_mant, bias_exp) -> np.ndarray:
    """``bias_mant << bias_exp`` (``>>`` for negative exponents), in int32 like Lava's scale_bias.

    Lava's stock LIF *stores* ``bias_mant``/``bias_exp`` as int16 (silently wrapping larger values
    when the process is built); hardware allows a signed 13-bit mantissa, so keep
    ``|bias_mant| < 4096``.
    """
    bm = wrap_int32(bias_mant)
    be = np.asarray(bias_exp, dtype=np.int64)
    shifted = np.where(
        be >= 0, np.left_shift(bm, np.maximum(be, 0)), np.right_shift(bm, np.maximum(-be, 0))
    )
    return wrap_int32(shifted)


def _count(stats: MutableMapping | None, key: str, hit: np.ndarray) -> None:
    if stats is None:
        return
    prev = stats.get(key)
    counts = hit.astype(np.int64)
    stats[key] = counts if prev is None else prev + counts


def lif_step(
    u,
    v,
    a_in,
    *,
    du,
    dv,
    vth,
    bias_mant,
    bias_exp,
    reset: ResetMode = "zero",
    vth_lo=None,
    stats: MutableMapping | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance fixed-point LIF neurons by one Lava step; returns new ``(u, v, s)``.

    ``u``, ``v``: state ``[B, *shape]``; ``a_in``: summed synaptic input of this step (int32
    values, already delayed by the connection). ``du``, ``dv``: decay constants (0..4095, scalars
    or broadcastable). ``vth``, ``bias_mant``, ``bias_exp``: scalars or per-neuron arrays.

    One step (note §4.2), each stage stored in int32:

    1. ``u = decay(u, du + 1) + (a_in << 6)``; then one conditional wrap: ``u -= 2**24`` if
       ``u > 2**23``, ``u += 2**24`` if ``u <= -2**23`` (not a modulo).
    2. ``v = clip(decay(v, dv) + u + (bias_mant << bias_exp), -(2**23 - 1), 2**23 - 1)``.
    3. Binary (``vth_lo is None``): ``s = v > vth << 6`` (strict), ``s`` in {0, 1}.
       Ternary (``vth_lo`` given, ``vth`` is the upper threshold): ``s = +1`` where
       ``v > vth << 6``, ``-1`` where ``v < vth_lo << 6`` (both at once gives 0, as in Lava's
       ``PyTernLifModelFixed``).
    4. Reset where ``s != 0``: ``reset="zero"`` sets ``v = 0`` (exactly Lava's ``PyLifModelBitAcc``
       and ``PyTernLifModelFixed``); ``reset="subtract"`` does ``v -= vth << 6`` for ``s = +1`` and
       ``v -= vth_lo << 6`` for ``s = -1`` (``vth_lo`` is negative, so ``v`` moves toward 0 by
       ``|vth_lo| << 6``). ``u`` is never reset; there is no refractory period.

    ``stats``: optional dict; this call adds per-element int64 counts (shape of ``u``) under
    ``"u_wrap"`` (step 1's conditional wrap fired) and ``"v_clip"`` (step 2 saturated). Sum over
    the batch axis for per-neuron totals. ``s`` is returned as int64.

    Thresholds are shifted in int64; Lava shifts ternary thresholds in int32, which differs only
    for ``|vth| >= 2**25`` (hardware thresholds are 17-bit).
    """
    if reset not in ("zero", "subtract"):
        raise ValueError(f"reset must be 'zero' or 'subtract', got {reset!r}")
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)

    # 1. current: decay, add MSB-aligned input, one conditional 24-bit wrap
    cur = wrap_int32(decay(u, np.asarray(du, dtype=np.int64) + DS_OFFSET))
    cur = wrap_int32(cur + wrap_int32(np.left_shift(wrap_int32(a_in), ACT_SHIFT)))
    wrap_hi = cur > STATE_MAX
    wrap_lo = cur <= -STATE_MAX
    u_new = np.where(wrap_hi, cur - 2 * STATE_MAX, np.where(wrap_lo, cur + 2 * STATE_MAX, cur))
    _count(stats, STAT_U_WRAP, wrap_hi | wrap_lo)

    # 2. voltage: decay, add current and bias, saturate
    volt = wrap_int32(decay(v, np.asarray(dv, dtype=np.int64) + DM_OFFSET))
    volt = wrap_int32(volt + u_new + effective_bias(bias_mant, bias_exp))
    _count(stats, STAT_V_CLIP, (volt > V_MAX) | (volt < V_MIN))
    v_new = np.clip(volt, V_MIN, V_MAX)

    # 3. spikes
    vth_hi_eff = np.left_shift(np.asarray(vth, dtype=np.int64), VTH_SHIFT)
    pos = v_new > vth_hi_eff
    if vth_lo is None:
        s = pos.astype(np.int64)
    else:
        vth_lo_eff = np.left_shift(np.asarray(vth_lo, dtype=np.int64), VTH_SHIFT)
        s = pos.astype(np.int64) - (v_new < vth_lo_eff).astype(np.int64)

    # 4. reset
    if reset == "zero":
        v_new = np.where(s != 0, 0, v_new)
    elif vth_lo is None:
        v_new = wrap_int32(v_new - np.where(s > 0, vth_hi_eff, 0))
    else:
        v_new = wrap_int32(v_new - np.where(s > 0, vth_hi_eff, np.where(s < 0, vth_lo_eff, 0)))
    return u_new, v_new, s
