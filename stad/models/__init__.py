"""stad.models: detectors built from backbones, necks and heads, with their losses, target assignment and decoding.

* :mod:`stad.models.moc`: the MOC tubelet detector (``build_moc(cfg)``, ``MOCDetector``);
* :mod:`stad.models.registry`: ``MODELS`` name -> builder;
* :mod:`stad.models.checkpoints`: loading the original MOC-Detector release / CenterNet COCO checkpoints.
"""
