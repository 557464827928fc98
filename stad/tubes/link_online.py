"""Online (frame-by-frame) action-tube linking with occlusion tolerance: ROAD + KORSAL, vectorized.

Algorithm of ROAD (Singh et al., "Online Real-time Multiple Spatiotemporal Action Localisation and
Prediction", ICCV 2017), with the occlusion extension of KORSAL (Abeywardena et al., "Key-point
Detection based Online Real-Time Spatio-Temporal Action Localization"). The rules were read from the
papers and the public MATLAB code (``gurkirt/realtime-action-detection``: ``online-tubes/actionpath/
actionPaths.m`` and ``incremental_linking.m``; ``Kalana304/KORSAL``: ``online-tubes/EXTP_with_BBOX``);
no code was copied. Per frame ``t`` and independently per class ``c``:

1. **Candidates** (ROAD ``dofilter``): detections whose class-``c`` score is >= ``min_score``
   (0.001), greedy NMS at IoU ``nms_threshold`` (0.45), the ``top_k`` (10) best.
2. **Prediction** (KORSAL, made explicit): each live tube predicts its box at ``t`` by constant
   velocity: the centre moves with the mean centre velocity over its last ``motion_window`` *real*
   boxes, the size is that of its last real box; clipped to the image when ``image_size`` is given.
3. **Association** (ROAD): live tubes in descending tube score (ties: older track first) each take,
   in turn, the still free candidate with the highest edge score among those whose IoU with the
   tube's *predicted* box is >= ``iou_threshold`` (0.1, ROAD's ``iouth``). Edge score: ``"score"``
   is ROAD's/KORSAL's released cost (the candidate's score); ``"score_iou"`` (default) adds the IoU
   with the predicted box, which keeps the identities of crossing actors with similar scores.
4. **Occlusion** (KORSAL): a tube that finds no candidate is extended by its predicted box, marked
   extrapolated (``frame_score`` 0 and ``extrapolated`` True), for up to ``max_gap`` consecutive
   frames; one more miss terminates it, and its trailing extrapolated boxes are removed (a tube never
   ends with invented boxes). Extrapolated boxes *inside* a tube (a gap that was bridged) stay.
5. **Birth** (ROAD): candidates that no tube took and score >= ``start_score`` start new tubes, with
   new integer track ids in candidate order (by class, then score).
6. **Tube score**: while live, the mean of its last ``score_window`` real detection scores (it
   orders the greedy association); the final ``Tube.score`` is the mean of all its real detection
   scores (ROAD's ``path_total_score``). Tubes shorter than ``min_length`` frames are dropped at the end
   (ROAD's evaluation keeps tubes of >= 8 frames).
7. **Trimming** (optional, ``trim=True``): a two-state Viterbi labelling of every finished tube's
   frames (action / background), maximising ``sum_t [action_t] (s_t - trim_threshold) -
   trim_penalty * #label changes`` with ``s_t`` the frame score (0 on extrapolated frames); each
   action segment (extrapolated ends removed) becomes a tube with the same track id. This is a
   simple energy in the spirit of ROAD's label-consistency Viterbi (``dpEM_max``), not a copy of it;
   it lives in :mod:`stad.tubes.trim`, shared with the offline builder's ``trim`` option.

Differences to the released MATLAB code, on purpose: a tube ends after ``max_gap`` bridged frames
(ROAD's ``gap`` g bridges g - 1 frames, so ``max_gap = g - 1``; its evaluation script used g = 3, the
default here is 5); ROAD orders tubes by the mean of their top ``gap + 1`` scores, here by the
mean of the last ``score_window`` scores; KORSAL extrapolates from the last two boxes (possibly
extrapolated ones) with a clamped step and keeps trailing extrapolated boxes; ROAD fills gaps by
repeating the next box. ROAD additionally keeps only the 50 best candidates before its NMS.

Vectorization: the candidates of all classes come out of one NMS over a ``[C, N]`` score matrix in
at most ``top_k`` rounds; the IoUs between every live tube's prediction and every candidate of its
class are computed in one pass over the (tube, candidate) pairs; the greedy association runs in
rounds where round r lets the r-th tube (in score order) of every class choose, since tubes of
different classes never compete. Boxes are ``x1, y1, x2, y2`` pixels; IoUs use the ACT "+1" areas
unless ``plus_one=False``. Naming: ``N`` detections, ``C`` classes, ``Q`` candidates, ``P`` live tubes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stad.boxes import box_iou, box_iou_paired
from stad.errors import StadError
from stad.structures import FrameDetections, Tube
from stad.tubes.trim import TRIM_PENALTY, TRIM_THRESHOLD, action_segments, check_trim_params, viterbi_action_segments

# Columns of the row log: one row per live tube and frame.
_ID, _FRAME, _X1, _Y2, _SCORE, _REAL = 0, 1, 2, 5, 6, 7
_LOG_COLS = 8


@dataclass(frozen=True)
class OnlineLinkParams:
    """Parameters of the online linking (see the module docstring for the rules and their origin)."""

    num_classes: int
    iou_threshold: float = 0.1
    max_gap: int = 5
    score_window: int = 5
    motion_window: int = 3
    min_score: float = 0.001
    start_score: float = 0.001
    nms_threshold: float | None = 0.45
    top_k: int = 10
    cost: Literal["score", "score_iou"] = "score_iou"
    min_length: int = 8
    image_size: tuple[int, int] | None = None
    plus_one: bool = True
    trim: bool = False
    trim_threshold: float = TRIM_THRESHOLD
    trim_penalty: float = TRIM_PENALTY


@dataclass(slots=True)
class LiveTube:
    """A live tube as seen right after ``OnlineLinker.update`` for ``frame``.

    Attributes:
        track_id: stable integer id of the tube (unique within the linker's stream).
        label: 0-based class index.
        score: mean of the last ``score_window`` real detection scores.
        frame: the current frame (from 1).
        box: ``(4,)`` float ``x1, y1, x2, y2`` pixels at ``frame`` (detected or extrapolated).
        extrapolated: True when ``box`` is a motion extrapolation (no detection matched).
        start: first frame of the tube.
        misses: consecutive frames without a matching detection, ending at ``frame`` (0..max_gap).
    """

    track_id: int
    label: int
    score: float
    frame: int
    box: np.ndarray
    extrapolated: bool
    start: int
    misses: int


@dataclass
class TrackedTube(Tube):
    """A finished tube with its track id.

    Attributes:
        label, score, boxes: as ``Tube``; ``boxes`` ``(L, 6)`` ``[frame, x1, y1, x2, y2, frame_score]``
            on consecutive frames, ``frame_score`` 0 on extrapolated frames.
        track_id: the id the tube had while live (``LiveTube.track_id``).
        extrapolated: ``(L,)`` bool, True on frames filled by motion extrapolation (never first or last).
    """

    track_id: int
    extrapolated: np.ndarray


class OnlineLinker:
    """Streaming tube linker: feed each frame's detections with ``update``, close with ``finish``.

    Args:
        num_classes: number of action classes ``C``.
        iou_threshold: minimum IoU (inclusive) between a tube's predicted box and a detection, 0.1 (ROAD).
        max_gap: frames a tube without detections is extended by extrapolated boxes before it ends, 5.
        score_window: real detections averaged into the live tube score, 5.
        motion_window: last real boxes whose centres give the constant velocity, 3 (>= 2; KORSAL: 2).
        min_score: detections below this class score are no candidates, 0.001 (ROAD).
        start_score: unassigned candidates start new tubes only from this score, 0.001 (ROAD: all).
        nms_threshold: per-class greedy NMS IoU threshold on the candidates, 0.45 (ROAD); None: no NMS.
        top_k: candidates per class and frame, 10 (ROAD).
        cost: edge score, ``"score_iou"`` (score + IoU with the prediction) or ``"score"`` (ROAD).
        min_length: finished tubes with fewer frames are dropped, 8 (ROAD's evaluation).
        image_size: ``(height, width)``; when given, predicted boxes are clipped to
            ``[0, width - 1] x [0, height - 1]``.
        plus_one: IoU convention (True: ACT "+1" pixel areas; False: continuous).
        trim: temporal trimming of finished tubes (module docstring, step 7), off by default.
        trim_threshold: frame score below which trimming favours background, in ``[0, 1]``, 0.1
            (the choice is explained in :mod:`stad.tubes.trim`).
        trim_penalty: cost of a label change in the trimming, >= 0, 0.5.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        # association
        iou_threshold: float = 0.1,
        cost: Literal["score", "score_iou"] = "score_iou",
        # occlusion and scores
        max_gap: int = 5,
        score_window: int = 5,
        motion_window: int = 3,
        image_size: tuple[int, int] | None = None,
        # candidates per frame and class
        min_score: float = 0.001,
        start_score: float = 0.001,
        nms_threshold: float | None = 0.45,
        top_k: int = 10,
        # output
        min_length: int = 8,
        trim: bool = False,
        trim_threshold: float = TRIM_THRESHOLD,
        trim_penalty: float = TRIM_PENALTY,
        plus_one: bool = True,
    ) -> None:
        self.params = _check_params(
            OnlineLinkParams(
                num_classes=int(num_classes),
                iou_threshold=float(iou_threshold),
                max_gap=int(max_gap),
                score_window=int(score_window),
                motion_window=int(motion_window),
                min_score=float(min_score),
                start_score=float(start_score),
                nms_threshold=None if nms_threshold is None else float(nms_threshold),
                top_k=int(top_k),
                cost=cost,
                min_length=int(min_length),
                image_size=None if image_size is None else (int(image_size[0]), int(image_size[1])),
                plus_one=bool(plus_one),
                trim=bool(trim),
                trim_threshold=float(trim_threshold),
                trim_penalty=float(trim_penalty),
            )
        )
        self._reset()

    # ------------------------------------------------------------------ public API

    @property
    def frame(self) -> int | None:
        """The last frame processed (None before the first ``update``)."""
        return self._frame

    @property
    def num_live(self) -> int:
        """Number of live tubes."""
        return int(self._ids.size)

    def update(
        self,
        frame: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray | None = None,
    ) -> list[LiveTube]:
        """Link the detections of ``frame`` to the live tubes.

        Frames must increase; skipped frames are processed as frames without detections.

        Args:
            frame: frame number (from 1), larger than the previous one.
            boxes: ``(N, 4)`` float ``x1, y1, x2, y2`` pixels (``x1 <= x2``, ``y1 <= y2``); N may be 0.
            scores: ``(N, C)`` per-class scores, or ``(N,)`` scores of class ``labels``.
            labels: ``(N,)`` 0-based class of each detection, with 1-D ``scores`` (may be omitted
                when ``num_classes == 1``); must be None with 2-D ``scores``.

        Returns:
            The live tubes after this frame, by track id.
        """
        frame = int(frame)
        if frame < 1:
            raise StadError(f"frame must be >= 1 (frames are numbered from 1), got {frame}")
        if self._frame is not None and frame <= self._frame:
            raise StadError(f"frames must increase: got frame {frame} after frame {self._frame}")
        cand = self._candidates(frame, boxes, scores, labels)
        if self._frame is not None:
            for skipped in range(self._frame + 1, frame):
                self._step(skipped, _Candidates.empty())
        self._step(frame, cand)
        return self.live_tubes()

    def live_tubes(self) -> list[LiveTube]:
        """Snapshot of the live tubes at the last processed frame, by track id."""
        order = np.argsort(self._ids, kind="stable")
        boxes = self._cur_box[order]  # [P, 4] a copy: snapshots do not change with the linker
        frame = self._frame
        return [
            LiveTube(track_id=i, label=c, score=s, frame=frame, box=b, extrapolated=m > 0, start=f, misses=m)
            for i, c, s, b, f, m in zip(
                self._ids[order].tolist(),
                self._label[order].tolist(),
                self._live_score()[order].tolist(),
                boxes,
                self._start[order].tolist(),
                self._misses[order].tolist(),
            )
        ]

    def pop_finished(self) -> list[TrackedTube]:
        """Tubes terminated since the last call (after the ``min_length`` filter), by track id.

        Calling it regularly keeps memory bounded on endless streams; ``finish`` returns the rest.
        """
        return self._collect(final=False)

    def finish(self) -> list[TrackedTube]:
        """Terminate all live tubes and return every tube not yet returned by ``pop_finished``.

        Trailing extrapolated boxes are removed, tubes shorter than ``min_length`` frames dropped
        (and trimmed when ``trim``). The linker is then reset: it can take a new stream from frame 1,
        with track ids from 0 again.

        Returns:
            Tubes by track id (``boxes`` ``(L, 6)`` ``[frame, x1, y1, x2, y2, frame_score]``).
        """
        out = self._collect(final=True)
        self._reset()
        return out

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        p = self.params
        self._frame: int | None = None
        self._next_id = 0
        self._ids = np.zeros(0, np.int64)  # [P]
        self._label = np.zeros(0, np.int64)  # [P]
        self._start = np.zeros(0, np.int64)  # [P] first frame
        self._last_real = np.zeros(0, np.int64)  # [P] frame of the last real box
        self._last_box = np.zeros((0, 4))  # [P, 4] last real box
        self._cur_box = np.zeros((0, 4))  # [P, 4] box at the current frame
        self._centres = np.zeros((0, p.motion_window, 3))  # [P, W, 3] (frame, cx, cy) of the last real boxes
        self._n_real = np.zeros(0, np.int64)  # [P] real detections so far
        self._recent = np.zeros((0, p.score_window))  # [P, S] last real scores, right-aligned, 0-padded
        self._score_sum = np.zeros(0)  # [P] sum of all real scores
        self._misses = np.zeros(0, np.int64)  # [P]
        self._log: list[np.ndarray] = []  # per frame [P, 8] rows (id, frame, x1, y1, x2, y2, score, real)
        # Terminated tubes waiting for _collect: [D, 5] rows (id, label, last real frame, score sum, n real).
        self._dead: list[np.ndarray] = []

    def _live_score(self) -> np.ndarray:
        n = np.minimum(self._n_real, self.params.score_window)
        return self._recent.sum(axis=1) / np.maximum(n, 1)

    # ------------------------------------------------------------------ one frame

    def _candidates(self, frame: int, boxes: Any, scores: Any, labels: Any) -> "_Candidates":
        """Validate one frame's detections and select the per-class candidates (ROAD ``dofilter``)."""
        p = self.params
        C = p.num_classes
        where = f"frame {frame}"
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise StadError(f"{where}: boxes must have shape [N, 4], got {boxes.shape}")
        N = boxes.shape[0]
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim == 2:
            if scores.shape != (N, C):
                raise StadError(f"{where}: scores must have shape [N, C] = [{N}, {C}], got {scores.shape}")
            if labels is not None:
                raise StadError(f"{where}: labels must be None when scores are per class [N, C]")
            dense = scores.T.copy()  # [C, N]
        else:
            if scores.shape != (N,):
                raise StadError(f"{where}: scores must have shape [N] or [N, C] with N={N}, got {scores.shape}")
            if labels is None:
                if C != 1 and N:
                    raise StadError(f"{where}: labels are required with one score per detection (C={C})")
                labels = np.zeros(N, np.int64)
            labels = np.asarray(labels)
            if labels.shape != (N,) or (N and not np.issubdtype(labels.dtype, np.integer)):
                raise StadError(f"{where}: labels must be [N] integers with N={N}, got {labels.dtype} {labels.shape}")
            bad = np.flatnonzero((labels < 0) | (labels >= C))
            if bad.size:
                raise StadError(f"{where}: detection {bad[0]}: label {labels[bad[0]]} not in [0, {C})")
            dense = np.full((C, N), -np.inf)
            dense[labels, np.arange(N)] = scores
        bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
        if bad.size:
            raise StadError(f"{where}: detection {bad[0]}: non-finite box {boxes[bad[0]].tolist()}")
        bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if bad.size:
            raise StadError(f"{where}: detection {bad[0]}: box {boxes[bad[0]].tolist()} has x2 < x1 or y2 < y1")
        bad = np.flatnonzero(~np.isfinite(scores.reshape(N, -1 if N else 1)).all(axis=1))
        if bad.size:
            raise StadError(f"{where}: detection {bad[0]}: non-finite score {scores[bad[0]].tolist()}")
        dense[dense < p.min_score] = -np.inf
        return _select_candidates(boxes, dense, top_k=p.top_k, nms_threshold=p.nms_threshold, plus_one=p.plus_one)

    def _predict(self, frame: int) -> np.ndarray:
        """Constant-velocity box of every live tube at ``frame``; returns ``[P, 4]``."""
        p = self.params
        W = p.motion_window
        P = self._ids.size
        n = np.minimum(self._n_real, W)  # [P] >= 1
        first = self._centres[np.arange(P), W - n]  # [P, 3] oldest real centre in the window
        last = self._centres[:, -1]  # [P, 3]
        dt = last[:, 0] - first[:, 0]
        velocity = np.where(dt[:, None] > 0, (last[:, 1:] - first[:, 1:]) / np.maximum(dt, 1)[:, None], 0.0)  # [P, 2]
        centre = last[:, 1:] + velocity * (frame - last[:, :1])  # [P, 2]
        half = (self._last_box[:, 2:] - self._last_box[:, :2]) / 2  # [P, 2]
        pred = np.concatenate([centre - half, centre + half], axis=1)  # [P, 4]
        if p.image_size is not None:
            height, width = p.image_size
            pred[:, 0::2] = np.clip(pred[:, 0::2], 0, width - 1)
            pred[:, 1::2] = np.clip(pred[:, 1::2], 0, height - 1)
        return pred

    def _step(self, frame: int, cand: "_Candidates") -> None:
        p = self.params
        P, Q = self._ids.size, cand.label.size
        pred = self._predict(frame) if P else np.zeros((0, 4))
        match = np.full(P, -1, np.int64)  # [P] candidate taken by each live tube
        if P and Q:
            match = self._associate(pred, cand)
        taken = np.zeros(Q, bool)
        taken[match[match >= 0]] = True

        # Matched tubes: a real box. Unmatched: an extrapolated box, or termination after max_gap misses.
        hit = match >= 0
        h = np.flatnonzero(hit)
        self._misses = np.where(hit, 0, self._misses + 1)
        dead = self._misses > p.max_gap
        self._cur_box = np.where(hit[:, None], 0.0, pred)
        if h.size:
            m = match[h]
            box = cand.boxes[m]
            self._cur_box[h] = box
            self._last_box[h] = box
            self._last_real[h] = frame
            self._add_real(h, frame, box, cand.score[m])
        if dead.any():
            self._bury(dead)
            self._keep(~dead)
            hit = hit[~dead]

        # Unassigned candidates start tubes (candidate order: class, then score).
        new = np.flatnonzero(~taken & (cand.score >= p.start_score))
        if new.size:
            self._birth(frame, cand.label[new], cand.boxes[new], cand.score[new])
            hit = np.concatenate([hit, np.ones(new.size, bool)])

        rows = np.empty((self._ids.size, _LOG_COLS))
        rows[:, _ID] = self._ids
        rows[:, _FRAME] = frame
        rows[:, _X1 : _Y2 + 1] = self._cur_box
        rows[:, _SCORE] = np.where(hit, self._recent[:, -1], 0.0)
        rows[:, _REAL] = hit
        self._log.append(rows)
        self._frame = frame

    def _associate(self, pred: np.ndarray, cand: "_Candidates") -> np.ndarray:
        """Greedy ROAD association of live tubes to candidates of their class; returns ``[P]`` (-1: none)."""
        p = self.params
        P = self._ids.size
        # Tubes by class, then descending live score, then track id (older first).
        order = np.lexsort((self._ids, -self._live_score(), self._label))  # [P]
        t_label = self._label[order]
        lo = np.searchsorted(cand.label, t_label, side="left")  # candidates are sorted by class
        counts = np.searchsorted(cand.label, t_label, side="right") - lo
        pos = np.repeat(np.arange(P), counts)  # [R] position in `order` of each (tube, candidate) pair
        c = lo[pos] + np.arange(pos.size) - np.repeat(np.cumsum(counts) - counts, counts)  # [R] candidate
        match = np.full(P, -1, np.int64)
        if pos.size == 0:
            return match
        iou = box_iou_paired(pred[order[pos]], cand.boxes[c], plus_one=p.plus_one)  # [R]
        valid = iou >= p.iou_threshold
        pos, c, iou = pos[valid], c[valid], iou[valid]
        if pos.size == 0:
            return match
        edge = cand.score[c] + (iou if p.cost == "score_iou" else 0.0)
        # Sequential greedy (each tube in turn takes its best free candidate), decided in rounds:
        # every undecided tube proposes its best free candidate; within a class, the tubes before the
        # first one proposing a candidate already proposed by an earlier tube are final (nothing
        # earlier can take their candidate). At least the first proposer of each class is final.
        srt = np.lexsort((c, -edge, pos))  # by tube turn (pos), best edge first, ties: candidate order
        pos, c = pos[srt], c[srt]
        free = np.ones(cand.label.size, bool)
        undecided = np.ones(P, bool)
        while True:
            ok = free[c] & undecided[pos]
            if not ok.any():
                break
            pp, pc = pos[ok], c[ok]
            first = np.concatenate([[True], pp[1:] != pp[:-1]])
            pp, pc = pp[first], pc[first]  # [n] each undecided tube's proposal, in turn order
            dup = np.ones(pp.size, bool)
            dup[np.unique(pc, return_index=True)[1]] = False  # proposed by an earlier tube (same class)
            cls = t_label[pp]
            starts = np.flatnonzero(np.concatenate([[True], cls[1:] != cls[:-1]]))
            seen = np.cumsum(dup)
            seen -= np.repeat(seen[starts] - dup[starts], np.diff(np.append(starts, pp.size)))  # per class
            final = seen == 0
            match[order[pp[final]]] = pc[final]
            free[pc[final]] = False
            undecided[pp[final]] = False
        return match

    def _add_real(self, idx: np.ndarray, frame: int, box: np.ndarray, score: np.ndarray) -> None:
        centre = (box[:, :2] + box[:, 2:]) / 2
        self._centres[idx, :-1] = self._centres[idx, 1:]
        self._centres[idx, -1, 0] = frame
        self._centres[idx, -1, 1:] = centre
        self._recent[idx, :-1] = self._recent[idx, 1:]
        self._recent[idx, -1] = score
        self._n_real[idx] += 1
        self._score_sum[idx] += score

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("_ids", "_label", "_start", "_last_real", "_last_box", "_cur_box", "_centres",
                     "_n_real", "_recent", "_score_sum", "_misses"):  # fmt: skip
            setattr(self, name, getattr(self, name)[keep])

    def _birth(self, frame: int, label: np.ndarray, box: np.ndarray, score: np.ndarray) -> None:
        p = self.params
        n = label.size
        ids = np.arange(self._next_id, self._next_id + n)
        self._next_id += n
        P = self._ids.size
        self._ids = np.concatenate([self._ids, ids])
        self._label = np.concatenate([self._label, label])
        self._start = np.concatenate([self._start, np.full(n, frame)])
        self._last_real = np.concatenate([self._last_real, np.full(n, frame)])
        self._last_box = np.concatenate([self._last_box, box])
        self._cur_box = np.concatenate([self._cur_box, box])
        self._centres = np.concatenate([self._centres, np.zeros((n, p.motion_window, 3))])
        self._n_real = np.concatenate([self._n_real, np.zeros(n, np.int64)])
        self._recent = np.concatenate([self._recent, np.zeros((n, p.score_window))])
        self._score_sum = np.concatenate([self._score_sum, np.zeros(n)])
        self._misses = np.concatenate([self._misses, np.zeros(n, np.int64)])
        self._add_real(np.arange(P, P + n), frame, box, score)

    # ------------------------------------------------------------------ output

    def _collect(self, *, final: bool) -> list[TrackedTube]:
        """Build the terminated tubes (all tubes when ``final``) from the row log; keep live rows."""
        if final and self._ids.size:
            self._bury(np.ones(self._ids.size, bool))
        if not self._dead:
            return []
        dead = np.concatenate(self._dead)  # [D, 5] (id, label, last real frame, score sum, n real)
        dead = dead[np.argsort(dead[:, 0], kind="stable")]
        self._dead = []
        dead_ids = dead[:, 0].astype(np.int64)
        log = np.concatenate(self._log) if self._log else np.zeros((0, _LOG_COLS))
        mine = np.isin(log[:, _ID].astype(np.int64), dead_ids)
        self._log = [log[~mine]]
        rows = log[mine]
        rows = rows[np.lexsort((rows[:, _FRAME], rows[:, _ID]))]  # by track id, then frame
        tube = np.searchsorted(dead_ids, rows[:, _ID].astype(np.int64))  # [R] index into dead
        rows = rows[rows[:, _FRAME] <= dead[tube, 2]]  # drop the extrapolated tails
        tube = np.searchsorted(dead_ids, rows[:, _ID].astype(np.int64))
        length = np.bincount(tube, minlength=dead_ids.size)  # [D]
        first = np.cumsum(length) - length
        boxes = rows[:, [_FRAME, 2, 3, 4, 5, _SCORE]]  # [R, 6]
        real = rows[:, _REAL] > 0
        p = self.params
        out: list[TrackedTube] = []
        for d in np.flatnonzero(length >= (1 if p.trim else p.min_length)).tolist():
            r0, r1 = int(first[d]), int(first[d] + length[d])
            track_id, label = int(dead_ids[d]), int(dead[d, 1])
            if p.trim:
                out.extend(self._trimmed(track_id, label, boxes[r0:r1], real[r0:r1]))
            else:
                score = float(dead[d, 3] / dead[d, 4])
                out.append(TrackedTube(label=label, score=score, boxes=boxes[r0:r1], track_id=track_id,
                                       extrapolated=~real[r0:r1]))  # fmt: skip
        return out

    def _bury(self, dead: np.ndarray) -> None:
        """Record the live tubes of mask ``dead`` ``[P]`` as terminated (their rows stay in the log)."""
        self._dead.append(
            np.stack(
                [self._ids[dead], self._label[dead], self._last_real[dead], self._score_sum[dead], self._n_real[dead]],
                axis=1,
            ).astype(np.float64)
        )

    def _trimmed(self, track_id: int, label: int, boxes: np.ndarray, real: np.ndarray) -> list[TrackedTube]:
        """Action segments of one tube by the two-state Viterbi labelling (module docstring, step 7)."""
        p = self.params
        out = []
        for s, e in action_segments(boxes[:, 5], threshold=p.trim_threshold, penalty=p.trim_penalty).tolist():
            seg_real = np.flatnonzero(real[s:e])
            if seg_real.size == 0:
                continue
            s, e = s + int(seg_real[0]), s + int(seg_real[-1]) + 1  # no extrapolated ends
            if e - s >= p.min_length:
                seg = boxes[s:e]
                out.append(TrackedTube(label=label, score=float(seg[real[s:e], 5].mean()), boxes=seg.copy(),
                                       track_id=track_id, extrapolated=~real[s:e]))  # fmt: skip
        return out


@dataclass
class _Candidates:
    """One frame's candidates, sorted by class, then by NMS rank (descending score)."""

    label: np.ndarray  # [Q] int
    score: np.ndarray  # [Q]
    boxes: np.ndarray  # [Q, 4]

    @classmethod
    def empty(cls) -> "_Candidates":
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))


def _select_candidates(
    boxes: np.ndarray, dense: np.ndarray, *, top_k: int, nms_threshold: float | None, plus_one: bool
) -> _Candidates:
    """Per-class greedy NMS and top-k over a ``[C, N]`` score matrix (-inf: not a candidate).

    All classes run together: round r picks every class's best remaining detection and suppresses,
    within that class, the detections whose IoU with it is > ``nms_threshold``.
    """
    C, N = dense.shape
    if N == 0:
        return _Candidates.empty()
    iou = box_iou(boxes, boxes, plus_one=plus_one) if nms_threshold is not None else None  # [N, N]
    remaining = dense
    picks_cls, picks_det, picks_score, picks_round = [], [], [], []
    for r in range(top_k):
        best = np.argmax(remaining, axis=1)  # [C] first index on ties
        value = remaining[np.arange(C), best]
        cls = np.flatnonzero(value > -np.inf)
        if cls.size == 0:
            break
        det = best[cls]
        picks_cls.append(cls)
        picks_det.append(det)
        picks_score.append(value[cls])
        picks_round.append(np.full(cls.size, r))
        if iou is not None:
            remaining[cls] = np.where(iou[det] > nms_threshold, -np.inf, remaining[cls])
        remaining[cls, det] = -np.inf
    if not picks_cls:
        return _Candidates.empty()
    label = np.concatenate(picks_cls)
    order = np.lexsort((np.concatenate(picks_round), label))  # by class, then rank
    det = np.concatenate(picks_det)[order]
    return _Candidates(label=label[order], score=np.concatenate(picks_score)[order], boxes=boxes[det])


def link_video_online(
    detections: FrameDetections,
    *,
    num_classes: int,
    video: str | None = None,
    nframes: int | None = None,
    **linker_args: Any,
) -> list[TrackedTube]:
    """Online tubes of one video, feeding its frames in order to a fresh ``OnlineLinker``.

    Args:
        detections: per-frame detections (one class per row); only the rows of ``video`` are used.
        num_classes: number of action classes.
        video: the video's name in ``detections.videos``; may be omitted when there is one video.
        nframes: frames of the video; frames 1..nframes are processed (frames without rows are
            empty). Default: up to the last frame with a detection. Rows beyond it are an error.
        **linker_args: keyword arguments of ``OnlineLinker`` (iou_threshold, max_gap, ...).

    Returns:
        The video's tubes by track id (``OnlineLinker.finish``).
    """
    if video is None:
        used = np.unique(np.asarray(detections.video, np.int64))
        if len(detections.videos) != 1 and used.size > 1:
            raise StadError(f"detections hold {len(detections.videos)} videos: name the one to link with video=")
        v = int(used[0]) if used.size else 0
    else:
        if video not in detections.videos:
            raise StadError(f"video {video!r} is not in the detections' videos")
        v = detections.videos.index(video)
    rows = np.flatnonzero(np.asarray(detections.video) == v)
    frame = np.asarray(detections.frame, np.int64)[rows]
    rows = rows[np.argsort(frame, kind="stable")]
    frame = np.asarray(detections.frame, np.int64)[rows]
    last = int(frame.max(initial=0)) if nframes is None else int(nframes)
    if frame.size and (frame[0] < 1 or frame[-1] > last):
        bad = frame[0] if frame[0] < 1 else frame[-1]
        raise StadError(f"detections: frame {bad} outside 1..{last}")
    linker = OnlineLinker(num_classes, **linker_args)
    bounds = np.searchsorted(frame, np.arange(1, last + 2))
    boxes = np.asarray(detections.boxes, np.float64)
    score = np.asarray(detections.score, np.float64)
    label = np.asarray(detections.label, np.int64)
    for t in range(1, last + 1):
        r = rows[bounds[t - 1] : bounds[t]]
        linker.update(t, boxes[r], score[r], label[r])
    return linker.finish()


def link_videos_online(
    detections: FrameDetections, *, num_classes: int, nframes: dict[str, int] | None = None, **linker_args: Any
) -> dict[str, list[TrackedTube]]:
    """``link_video_online`` for every video of ``detections``; returns video -> tubes."""
    return {
        v: link_video_online(
            detections, num_classes=num_classes, video=v, nframes=None if nframes is None else nframes.get(v),
            **linker_args,
        )  # fmt: skip
        for v in detections.videos
    }


def _check_params(p: OnlineLinkParams) -> OnlineLinkParams:
    if p.num_classes < 1:
        raise StadError(f"num_classes must be >= 1, got {p.num_classes}")
    if not 0.0 <= p.iou_threshold <= 1.0:
        raise StadError(f"iou_threshold must be in [0, 1], got {p.iou_threshold}")
    if p.max_gap < 0:
        raise StadError(f"max_gap must be >= 0, got {p.max_gap}")
    if p.score_window < 1:
        raise StadError(f"score_window must be >= 1, got {p.score_window}")
    if p.motion_window < 2:
        raise StadError(f"motion_window must be >= 2 (two boxes give a velocity), got {p.motion_window}")
    if p.top_k < 1:
        raise StadError(f"top_k must be >= 1, got {p.top_k}")
    if p.nms_threshold is not None and not 0.0 <= p.nms_threshold <= 1.0:
        raise StadError(f"nms_threshold must be in [0, 1] or None, got {p.nms_threshold}")
    if p.cost not in ("score", "score_iou"):
        raise StadError(f"cost must be 'score' or 'score_iou', got {p.cost!r}")
    if p.min_length < 1:
        raise StadError(f"min_length must be >= 1, got {p.min_length}")
    if p.image_size is not None and min(p.image_size) < 1:
        raise StadError(f"image_size must be (height, width) >= 1, got {p.image_size}")
    check_trim_params(p.trim_threshold, p.trim_penalty)
    return p


__all__ = [
    "LiveTube",
    "OnlineLinkParams",
    "OnlineLinker",
    "TrackedTube",
    "link_video_online",
    "link_videos_online",
    "viterbi_action_segments",
]
