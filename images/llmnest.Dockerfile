# The image the Kubernetes target runs its gateway (`llmnest gateway serve`) and its weights fetch Job in:
# llmnest with the PostgreSQL/Redis and model-hub extras, nothing else (no engine, no GPU libraries).
# `make gateway-image` builds it from this checkout; push it where your cluster pulls from and pass
# `llmnest up MODEL --target kubernetes --gateway-image REF`. BASE is any image with Python 3.10+ and pip.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG WHEEL
COPY ${WHEEL} /tmp/
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check "/tmp/${WHEEL}[shared,hub]" \
    && rm "/tmp/${WHEEL}" && llmnest --version
