# truth-forge as an image: `docker build -t truth-forge .`
# `docker run truth-forge` starts `serve` (webhooks + scheduled syncs); any other command replaces
# it: `docker run truth-forge sync --log-format json` (a Cloud Run job, a cron container).
# Settings come from the environment (TWENTY_BASE_URL, TWENTY_API_KEY or Secret Manager through
# TRUTH_FORGE_GCP_PROJECT_ID, TRUTH_FORGE_WAREHOUSE_URL=bigquery://PROJECT/DATASET); see docs/configuration.md.

# The wheel is built apart, so the image holds no source tree and no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY truth_forge truth_forge
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
COPY --from=build /src/requirements/constraints.txt /tmp/constraints.txt
# The bigquery extra: the image is for Google Cloud (BigQuery, Secret Manager); pins as the tests ran them.
RUN pip install --no-cache-dir -c /tmp/constraints.txt "$(ls /wheels/truth_forge-*.whl)[bigquery]" \
    && rm -rf /wheels /tmp/constraints.txt
RUN useradd --create-home --uid 10001 truth-forge
USER truth-forge
WORKDIR /home/truth-forge
# serve binds loopback unless told otherwise; in a container it must answer on the container's address.
ENV TRUTH_FORGE_SERVE_HOST=0.0.0.0 \
    TRUTH_FORGE_SERVE_PORT=8080
EXPOSE 8080
ENTRYPOINT ["truth-forge"]
CMD ["serve"]
