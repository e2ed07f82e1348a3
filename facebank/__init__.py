"""facebank: the Amazon Rekognition face API on models and storage you control."""

__version__ = "0.1.0"

# facebank.client(api_url, region=...): a stock boto3 Rekognition client for a deployed API. The
# function shadows its module's name on the package on purpose; import helpers from the module
# with `from facebank.client import ...`.
from facebank.client import client

__all__ = ["client"]
