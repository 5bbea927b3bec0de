# authserver: the production image (granian via `authserver serve`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY authserver ./authserver
COPY migrations ./migrations
COPY verifiers/python ./verifiers/python
# Wheels of authserver and of everything it needs, authserver-verifier included (built
# from verifiers/python: the server's requirement names that directory).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/authserver --create-home authserver
COPY --from=build /wheels /wheels
# --no-deps: /wheels is the complete, resolved set; resolving again would look for the
# verifier at the build stage's path.
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl && rm -rf /wheels
USER authserver
WORKDIR /var/lib/authserver
ENV AUTHSERVER_HOST=0.0.0.0 \
    AUTHSERVER_PORT=8000 \
    AUTHSERVER_KEYS_DIR=/var/lib/authserver/keys
EXPOSE 8000
# The port serve listens on (AUTHSERVER_PORT), not a copy of its default: a container run
# with another port was reported unhealthy and restarted while it served.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('AUTHSERVER_PORT', '8000'), timeout=2).status == 200 else 1)"
CMD ["authserver", "serve"]
