# tailseal container image: the agent for a Kubernetes DaemonSet or sidecar
# (packaging/kubernetes/), and the reference collector (`tailseal collector`).
#
#   podman build -t tailseal .                          # or docker build
#   podman build --build-arg BASE=localhost/debian12 .  # any Debian 12 based image
#
# Two stages on the same base: `build` makes the virtualenv /opt/tailseal with the base's own
# Python 3.11, the runtime stage copies only that venv (no pip, no compiler, no apt lists).
# The runtime runs as uid 10001, needs no capability and writes only /var/lib/tailseal (a
# VOLUME: mount a hostPath there to keep the buffer across pod restarts), so it runs with a
# read-only root filesystem. Behind a TLS-intercepting proxy, hand pip its CA bundle as a build
# secret: --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A base that already has Python 3.11 with venv (as a debootstrap-made one may) skips apt.
RUN python3.11 -c 'import ensurepip, venv' 2>/dev/null || { \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; }
COPY pyproject.toml README.md /src/
COPY agent /src/agent
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && python3.11 -m venv /opt/tailseal \
    && /opt/tailseal/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile /src \
    && /opt/tailseal/bin/pip uninstall -y --disable-pip-version-check pip setuptools \
    && rm -f /opt/tailseal/bin/activate* /opt/tailseal/bin/Activate.ps1 \
    && python3.11 -m compileall -q -j0 --invalidation-mode unchecked-hash /opt/tailseal/lib \
    && /opt/tailseal/bin/tailseal version

FROM ${BASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3.11 -c 'import ssl' 2>/dev/null || { \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 ca-certificates \
        && rm -rf /var/lib/apt/lists/*; }
# uid/gid 10001; member of adm (gid 4 on Debian) so root:adm 0640 logs of a host /var/log
# mounted into the pod are readable (Kubernetes: supplementalGroups: [4]).
RUN groupadd --system --gid 10001 tailseal \
    && useradd --system --uid 10001 --gid 10001 --groups adm --no-create-home \
        --home-dir /var/lib/tailseal --shell /usr/sbin/nologin tailseal \
    && install -d -m 0750 -o 10001 -g 10001 /var/lib/tailseal
COPY --from=build /opt/tailseal /opt/tailseal
COPY packaging/config/tailseal.toml /etc/tailseal/tailseal.toml
ENV PATH=/opt/tailseal/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TAILSEAL_CONFIG=/etc/tailseal/tailseal.toml
USER 10001:10001
VOLUME ["/var/lib/tailseal"]
STOPSIGNAL SIGTERM
# Healthy = the agent's event loop answers /healthz on its control socket (never depends on the
# collector). The socket is <state_dir>/control.sock unless [control] socket says otherwise.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/tailseal/bin/python", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(4); s.connect('/var/lib/tailseal/control.sock'); s.sendall(b'GET /healthz HTTP/1.0\\r\\n\\r\\n'); sys.exit(0 if s.recv(64).split()[1] == b'200' else 1)"]
ENTRYPOINT ["/opt/tailseal/bin/tailseal"]
CMD ["run"]
