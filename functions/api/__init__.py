"""One FastAPI app for REST and GraphQL; each Lambda function wraps the routes it serves."""
