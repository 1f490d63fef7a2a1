#!/bin/sh
# As AWS's base images: the handler is the one argument; outside Lambda (no runtime API), the
# runtime interface emulator serves the invoke API on :8080 and runs the bootstrap.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
fi
exec /var/runtime/bootstrap
