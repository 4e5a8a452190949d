# syntax=docker/dockerfile:1
# The spreadguard webhook server image: `docker build -t spreadguard:0.1.0 .`
# (the tag manifests/base/kustomization.yaml deploys; see docs/install.md).
#
# Runs as the non-root user 10001 with a read-only root filesystem: nothing is written at run time
# but /tmp (an emptyDir in the Deployment). The server reads its certificate and key from
# /etc/spreadguard/tls and its policies from /etc/spreadguard/policies, both mounted by the
# Deployment; the default policies are baked in for `docker run` without mounts.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/spreadguard
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook/ webhook/
RUN /opt/spreadguard/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/spreadguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 spreadguard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin spreadguard
COPY --from=build /opt/spreadguard /opt/spreadguard
COPY policies/*.yaml /etc/spreadguard/policies/
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["spreadguard"]
CMD ["serve", "--policies", "/etc/spreadguard/policies", "--tls-cert", "/etc/spreadguard/tls/tls.crt", "--tls-key", "/etc/spreadguard/tls/tls.key", "--bind", "0.0.0.0:8443"]
