"""Serverless-style handlers (AWS Lambda signature) and the FastAPI app that serves them."""
