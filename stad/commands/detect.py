"""``stad detect VIDEO_OR_FRAMES --checkpoint CKPT``: action tubes (tubelet models) or keyframe actors with their
actions (keyframe models: STEP) in a video, drawn into an MP4."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "detect",
        help="detect action tubes or keyframe actions in a video file or frame folder (annotated MP4 + predictions)",
        description=(
            "Tubelet models (moc, stado): run the detector over every K-frame window of a video file or a folder of "
            "images, link the tubelets into action tubes and write <name>_tubes.mp4 (tubes coloured by identity, with "
            "class and score), <name>_tubes.json and <name>_detections.csv to --out. Keyframe models (step): detect "
            "the actors and their actions at a keyframe every second and write <name>_actions.mp4 (boxes with their "
            "top actions) and <name>_predictions.csv (AVA prediction format)."
        ),
    )
    parser.add_argument("source", help="video file (any format FFmpeg reads) or folder of .jpg/.png frames")
    parser.add_argument("--checkpoint", required=True, help="stad checkpoint (.pt)")
    parser.add_argument("--out", default="detect_output", help="output folder (default: detect_output)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--min-score", type=float, default=0.1, help="draw tubes scoring at least this (default 0.1)")
    parser.add_argument("--flow-checkpoint", help="flow-stream checkpoint: fuse it with --checkpoint (the RGB model)")
    parser.add_argument("--fusion-weight", type=float, metavar="W",
                        help="RGB weight of the fused outputs (flow: 1 - W; default MOC's 0.5 / 0.8 / 0.8)")
    parser.add_argument("--flow-method", choices=("dis", "farneback"), default="dis",
                        help="optical flow computed on the fly for a flow or fused model (default dis, as stad flow)")
    parser.add_argument("--fps", type=float, help="keyframe models: frame rate of the source (default: the video's; "
                        "30 for a frame folder)")
    parser.add_argument("--conf", type=float, default=0.4, help="keyframe models: keep actions scoring at least this "
                        "(default 0.4, STEP's demo)")
    parser.add_argument("--show-masks", action="store_true",
                        help="blend the predicted attention masks (STADO checkpoints) into the MP4; also writes <name>_masks.npy")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from stad.engine.families import family_name
    from stad.engine.families.common import load_detector
    from stad.engine.families.tubelet import detect_source, inference_config, link_config, load_two_stream, stream_spec
    from stad.engine.train import resolve_device
    from stad.errors import StadError
    from stad.models.fusion import FusionWeights

    device = resolve_device(args.device)
    weights = FusionWeights.uniform(args.fusion_weight) if args.fusion_weight is not None else None
    if args.flow_checkpoint:
        model, cfg, spec = load_two_stream(args.checkpoint, args.flow_checkpoint, device=device, weights=weights)
    else:
        if weights is not None:
            raise StadError("--fusion-weight needs --flow-checkpoint")
        model, cfg = load_detector(args.checkpoint, device=device)
        if family_name(cfg.model.name) == "keyframe":
            return _detect_keyframes(model, cfg, args, device)
        if family_name(cfg.model.name) == "frame":
            raise StadError(
                f"{args.checkpoint} holds a frame-level {cfg.model.name!r} model (online linking): "
                f"run it with `stad stream {args.source} --checkpoint {args.checkpoint} --out DIR`"
            )
        spec = stream_spec(cfg)
    if args.show_masks and not hasattr(model, "masks_from_features"):
        raise StadError(f"--show-masks needs a model that predicts attention masks (model.name: stado); {args.checkpoint} holds a {cfg.model.name!r} model")
    labels = cfg.model.labels or [str(i) for i in range(cfg.model.num_classes)]
    infer_cfg = replace(
        inference_config(cfg), flip=args.flip or inference_config(cfg).flip, flip_invert_channels=spec.flip_invert_channels
    )
    result = detect_source(
        model, args.source, args.out, labels=labels, device=device, cfg=infer_cfg, link=link_config(cfg), min_tube_score=args.min_score,
        stream=spec, flow_method=args.flow_method, show_masks=args.show_masks,
    )
    tubes = next(iter(result.predictions.tubes.values()))
    print(f"{len(tubes)} tubes ({sum(t.score >= args.min_score for t in tubes)} drawn)")
    for tube in sorted(tubes, key=lambda t: -t.score)[:10]:
        frames = tube.boxes[:, 0]
        print(f"  {labels[tube.label]:>12s}  score {tube.score:.3f}  frames {int(frames.min())}-{int(frames.max())}")
    print(f"wrote {result.video}, {result.tubes_json}, {result.detections_csv}" + (f", {result.masks}" if result.masks else ""))
    return 0


def _detect_keyframes(model, cfg, args: argparse.Namespace, device) -> int:  # noqa: ANN001 - torch types
    from stad.engine.families.keyframe import detect_source
    from stad.errors import StadError

    if args.flip or args.show_masks:
        raise StadError(f"--flip and --show-masks are for tubelet models; {args.checkpoint} holds a {cfg.model.name!r} model")
    result = detect_source(model, cfg, args.source, args.out, device=device, fps=args.fps, conf_thresh=args.conf)
    print(f"{len(result.keyframes)} keyframes, {len(result.rows)} actor-action detections scoring >= {args.conf}")
    print(f"wrote {result.video}, {result.predictions_csv}")
    return 0
