"""stad.viz: drawing boxes, labels and tubes (draw.py) and writing/reading MP4 videos (video.py)."""
