"""stad: spatio-temporal action detection (MOC, STADO, online key-point detector, STEP, FBIL)."""

__version__ = "0.1.0"
