# The operator image: `spotfleet run` as a non-root user.
# Build: docker build -t spotfleet:dev .   (needs a Docker engine; CI machines have none,
# so the image is exercised by the `kind` test tier on users' and release machines.)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY operator ./operator
COPY sim ./sim
COPY crds ./crds
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --create-home spotfleet
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532
EXPOSE 8080 8081
ENTRYPOINT ["spotfleet"]
CMD ["run", "--all-namespaces"]
