"""sync-worker: keeps sales outreach tools and CRMs in step and flags leaked deals."""

__all__ = ["__version__"]

__version__ = "0.1.0"
