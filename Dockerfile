# One image for every process of the chain: the three services and their outbox relays.
#   service: python -m services.<name>.app       (kartlegging | bosetting | kompetanse)
#   relay:   python -m shared.relay <name>
# The command is chosen by docker-compose.yml or the Kubernetes manifests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The services bind 127.0.0.1 by default (a developer machine); a container must listen on all interfaces.
    CHAIN_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 chain \
    && useradd --system --uid 10001 --gid chain --home-dir /app --no-create-home --shell /usr/sbin/nologin chain

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
# (Runtime dependencies only: the dev extra is never installed.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY shared/ ./shared/
COPY services/ ./services/
COPY sim/ ./sim/
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && mkdir -p /app/var \
    && chown chain:chain /app/var

USER 10001:10001

EXPOSE 8101 8102 8103

# No single obvious process: by default show the operator CLI's help.
CMD ["chain", "--help"]
