# The dunning service: one image for every role, chosen by the command
# (`worker`, `api`, `codec-server`, `setup`, `invoice ...`), e.g. `docker run dunning worker`.
# docker-compose.yml runs each role from it; settings come from the environment (DUNNING_*).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the package wheel, from the sources it is made of --------------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY workflows ./workflows
COPY activities ./activities
COPY client ./client
COPY worker ./worker
COPY api ./api
COPY cli ./cli
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its dependencies, run by an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin dunning
# the runtime lock only (no dev or test package), every file checked against its hash; then the wheel
COPY requirements/runtime.txt /tmp/runtime.txt
RUN python -m pip install --require-hashes -r /tmp/runtime.txt && rm /tmp/runtime.txt
COPY --from=builder /wheels /tmp/wheels
RUN python -m pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER dunning
WORKDIR /home/dunning
# API, codec server, the worker's Temporal SDK metrics
EXPOSE 8000 8081 9464
ENTRYPOINT ["dunning"]
CMD ["worker"]
