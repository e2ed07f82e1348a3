"""AWS transports: Lambda handlers behind API Gateway."""
