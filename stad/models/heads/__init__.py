"""Detection heads (prediction only; losses live in stad.models.losses, decoding in stad.models.decode)."""

from stad.models.heads.moc import MOCHead, MOCOutputs

__all__ = ["MOCHead", "MOCOutputs"]
