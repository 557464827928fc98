"""Tube building from detections (numpy only): ACT/MOC offline linking, online linking, soft NMS, tube NMS, ST-IoU.

Boxes are ``x1, y1, x2, y2`` pixels with the ACT "+1" areas throughout (PROTOCOLS.md §A).
"""

from stad.tubes.link_offline import build_tubes, build_tubes_for_videos
from stad.tubes.link_online import (
    LiveTube,
    OnlineLinker,
    OnlineLinkParams,
    TrackedTube,
    link_video_online,
    link_videos_online,
    viterbi_action_segments,
)
from stad.tubes.nms import (
    TubeletNMSResult,
    batched_frame_soft_nms,
    batched_tubelet_soft_nms,
    frame_soft_nms,
    spatiotemporal_iou,
    spatiotemporal_iou_matrix,
    tube_nms,
    tubelet_soft_nms,
)
from stad.tubes.tubelets import (
    TubeletsFile,
    load_tubelets,
    save_tubelets,
    tubelets_to_frame_detections,
    validate_tubelets,
)

__all__ = [
    "LiveTube",
    "OnlineLinkParams",
    "OnlineLinker",
    "TrackedTube",
    "link_video_online",
    "link_videos_online",
    "viterbi_action_segments",
    "TubeletNMSResult",
    "TubeletsFile",
    "batched_frame_soft_nms",
    "batched_tubelet_soft_nms",
    "build_tubes",
    "build_tubes_for_videos",
    "frame_soft_nms",
    "load_tubelets",
    "save_tubelets",
    "spatiotemporal_iou",
    "spatiotemporal_iou_matrix",
    "tube_nms",
    "tubelet_soft_nms",
    "tubelets_to_frame_detections",
    "validate_tubelets",
]
