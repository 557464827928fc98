"""``stad proposals DATA_OR_VIDEO --checkpoint PERSON.pt --out FILE``: person proposals at 1 Hz keyframes.

Example (a person detector trained in stad, then proposals for the synthetic AVA layout)::

    stad train configs/keypoint_r18w025_synth_small.yaml data.options.person_boxes=true train.output_dir=runs/person
    stad proposals data/synth-step --checkpoint runs/person/last.pt --out data/synth-step/proposals.pkl
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "proposals",
        help="person proposals at every keyframe of a data set or video (mmaction2 pickle or CSV)",
        description=(
            "Run a frame detector trained in stad (model.name keypoint; train it class-agnostically with "
            "data.options.person_boxes=true) on the first frame of every second of a keyframe data set (frames in the "
            "ava, step or acar layout under DATA) or of a video file / frame folder, merge its boxes of all classes by "
            "NMS and write (video, second) -> boxes + scores, normalised to [0, 1]: mmaction2's dense-proposal pickle "
            "({'video,%%04d': (N, 5)}), or rows video_id,timestamp,x1,y1,x2,y2,score when --out ends in .csv."
        ),
    )
    parser.add_argument("source", help="keyframe data set root, video file, or folder of one video's frames")
    parser.add_argument("--checkpoint", required=True, help="stad checkpoint of a frame detector (keypoint)")
    parser.add_argument("--out", required=True, type=Path, help="output file (.pkl: mmaction2 pickle; .csv: CSV)")
    parser.add_argument("--min-score", type=float, default=0.1, help="keep boxes scoring at least this (default 0.1)")
    parser.add_argument("--top-k", type=int, default=20, help="at most this many boxes per keyframe (default 20)")
    parser.add_argument("--nms", type=float, default=0.5, help="class-agnostic NMS IoU (default 0.5)")
    parser.add_argument("--layout", default="auto", choices=("auto", "ava", "step", "acar"),
                        help="frame layout of a data set (default: recognised from disk)")
    parser.add_argument("--first-timestamp", type=int, help="first keyframe second of a data set (AVA: 902)")
    parser.add_argument("--last-timestamp", type=int, help="last keyframe second of a data set (AVA: 1798)")
    parser.add_argument("--fps", type=float, help="frame rate of a video / frame folder (default: the video's; 30 for a folder)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)
    return parser


def _is_dataset(source: Path) -> bool:
    """A folder with ``frames/`` or with sub-folders (one per video) is a data set; a folder of images is one video."""
    from stad.engine.infer import IMAGE_SUFFIXES

    if not source.is_dir():
        return False
    if (source / "frames").is_dir():
        return True
    return not any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.iterdir() if p.is_file())


def main(args: argparse.Namespace) -> int:
    from stad.engine.families.common import load_detector
    from stad.engine.proposals import ProposalConfig, dataset_proposals, video_proposals, write_proposal_file
    from stad.engine.train import resolve_device
    from stad.errors import StadError

    if args.top_k < 1 or not 0.0 < args.nms <= 1.0:
        raise StadError(f"--top-k must be >= 1 and --nms in (0, 1], got {args.top_k} and {args.nms}")
    device = resolve_device(args.device)
    model, cfg = load_detector(args.checkpoint, device=device)
    if not hasattr(model, "detect_frames"):
        raise StadError(f"{args.checkpoint} holds a {cfg.model.name!r} model; stad proposals needs a frame detector (keypoint)")
    proposal_cfg = ProposalConfig(input_size=tuple(int(v) for v in cfg.data.input_size), min_score=args.min_score,
                                  top_k=args.top_k, nms_iou=args.nms)
    source = Path(args.source)
    if _is_dataset(source):
        if args.fps is not None:
            raise StadError("--fps is for a video or frame folder; a data set's layout gives its frame rate")
        proposals = dataset_proposals(model, source, device=device, cfg=proposal_cfg, layout=args.layout,
                                      first=args.first_timestamp, last=args.last_timestamp, progress=not args.no_progress)
    else:
        proposals = video_proposals(model, source, device=device, cfg=proposal_cfg, fps=args.fps)
    path = write_proposal_file(args.out, proposals)
    boxes = sum(len(v) for v in proposals.values())
    videos = len({video for video, _ in proposals})
    print(f"{boxes} person boxes at {len(proposals)} keyframes of {videos} video(s) ({cfg.model.labels or cfg.model.num_classes} "
          f"classes merged) -> {path}")
    return 0
