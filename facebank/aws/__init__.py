"""AWS transports: the Lambda handlers (API Gateway, S3-event ingest, compaction) and their limits.

Importing this package is cheap (no Powertools, no models): ``facebank.client`` uses the limits.
"""

# Lambda accepts at most 6 MB (6,291,456 bytes) of synchronous invocation payload, and API Gateway
# wraps the request body in an event with headers and request context. Bodies up to this size
# always fit; above it the request may never reach the function. Base64 makes an image 4/3 larger,
# so this admits about 4.4 MB of image Bytes in one request (CompareFaces: both images together).
MAX_REQUEST_BODY = 6_000_000
