"""facebank: the Amazon Rekognition face API on models and storage you control."""

__version__ = "0.1.0"
