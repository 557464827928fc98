"""Temporal trimming of action tubes: a two-state (action / background) Viterbi labelling of the frames.

A linker extends a tube through frames where the action has not started yet or has already ended,
because it links boxes, not actions. ROAD (Singh et al., "Online Real-time Multiple Spatiotemporal
Action Localisation and Prediction", ICCV 2017) therefore labels every frame of a finished tube as
action or background with a label-consistency Viterbi (its MATLAB ``dpEM_max``) and keeps the action
stretches. Here the energy is a simple one in that spirit (no code was copied): with ``s_t`` the
frame score of frame ``t`` of a tube of ``L`` frames, the labelling ``a_t`` in {background, action}
maximises::

    sum_t [a_t = action] (s_t - threshold)  -  penalty * #{t : a_t != a_(t-1)}

so a frame is pulled towards "action" by how far its score exceeds ``threshold``, and every label change
costs ``penalty``: a dip inside an action is cut out only when its summed deficit below ``threshold``
exceeds two changes (``2 * penalty``), a tube end only when its deficit exceeds one (``penalty``).

Shared by the online linker (:mod:`stad.tubes.link_online`, ``OnlineLinker(trim=True)``) and the offline
ACT/MOC builder (:mod:`stad.tubes.link_offline`, ``build_tubes(trim=True)``), with the same defaults
(:data:`TRIM_THRESHOLD`, :data:`TRIM_PENALTY`), so both cut identical frame scores into identical segments.
Frame scores are class probabilities in ``[0, 1]``.
"""

from __future__ import annotations

import math

import numpy as np

from stad.errors import StadError

# Defaults of both linkers. Frame scores are class probabilities: a frame scoring below 0.1 pulls its
# tube towards background (well above the candidate floors, 0.001 online and the 0.005 tube filter
# offline, so weak, barely linked frames are trimmed, yet low enough that a moderately confident
# action is kept); a label change costs 0.5, so a tube is split only by a dip whose summed deficit
# exceeds 1.0 (e.g. more than 10 frames scoring 0), and ends are trimmed once their deficit exceeds 0.5.
TRIM_THRESHOLD = 0.1
TRIM_PENALTY = 0.5


def check_trim_params(threshold: float, penalty: float) -> None:
    """Raise a ``StadError`` naming the parameter unless ``0 <= threshold <= 1`` and ``0 <= penalty < inf``.

    Args:
        threshold: ``trim_threshold``, on the scale of the frame scores (class probabilities).
        penalty: ``trim_penalty``, the cost of one label change.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise StadError(f"trim_threshold must be in [0, 1] (frame scores are probabilities), got {threshold}")
    if not (float(penalty) >= 0.0 and math.isfinite(float(penalty))):
        raise StadError(f"trim_penalty must be >= 0 and finite, got {penalty}")


def viterbi_action_segments(energy: np.ndarray, penalty: float) -> np.ndarray:
    """Two-state labelling maximising ``sum_t [a_t] energy_t - penalty * #{t: a_t != a_(t-1)}``.

    Args:
        energy: ``(L,)`` gain of labelling each frame "action" over "background".
        penalty: cost of each label change (>= 0); the labels before the first frame are free.

    Returns:
        ``(L,)`` bool, True where the optimal labelling is "action" (ties favour background).
    """
    energy = np.asarray(energy, dtype=np.float64)
    L = energy.size
    if L == 0:
        return np.zeros(0, bool)
    back = np.zeros((L, 2), bool)  # back[t, s]: previous state of the best path ending in state s at t
    bg, act = 0.0, float(energy[0])
    for t in range(1, L):
        stay_bg, from_act = bg, act - penalty
        stay_act, from_bg = act, bg - penalty
        back[t, 0] = from_act > stay_bg
        back[t, 1] = not (from_bg > stay_act)
        bg = max(stay_bg, from_act)
        act = max(stay_act, from_bg) + float(energy[t])
    out = np.zeros(L, bool)
    state = act > bg
    for t in range(L - 1, -1, -1):
        out[t] = state
        state = back[t, int(state)] if t else state
    return out


def action_segments(
    frame_scores: np.ndarray, *, threshold: float = TRIM_THRESHOLD, penalty: float = TRIM_PENALTY
) -> np.ndarray:
    """The action stretches of one tube: runs of frames labelled "action" by ``viterbi_action_segments``.

    Args:
        frame_scores: ``(L,)`` per-frame scores of the tube, in frame order.
        threshold: ``trim_threshold``, frames scoring above it pull towards "action", 0.1.
        penalty: ``trim_penalty``, cost of a label change, 0.5.

    Returns:
        ``(S, 2)`` int64 ``[start, end)`` row indices into ``frame_scores``, in order; ``(0, 2)`` when
        no frame is "action" (always so when no score exceeds ``threshold``).
    """
    scores = np.asarray(frame_scores, dtype=np.float64)
    action = viterbi_action_segments(scores - threshold, penalty)  # [L] bool
    edges = np.flatnonzero(np.diff(np.r_[0, action.astype(np.int8), 0]))  # alternating starts, ends
    return edges.reshape(-1, 2).astype(np.int64)


__all__ = ["TRIM_PENALTY", "TRIM_THRESHOLD", "action_segments", "check_trim_params", "viterbi_action_segments"]
