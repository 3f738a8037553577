"""patchsim: physical-world adversarial patches for driving perception."""

__version__ = "0.1.0"
