"""avatar: talk to a photo. Speech in, a talking-head video reply out."""

__version__ = "0.1.0"
