"""CDK infrastructure for deploying facebank into your own AWS account (see ``app.py``)."""
