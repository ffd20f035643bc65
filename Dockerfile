# The s3dock container image, for machines and CI jobs without glibc (Alpine, the docker:cli image):
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -e AWS_ACCESS_KEY_ID ... s3dock:VERSION push app:tag
# Built by `make image` (scripts/image.sh), which lays out the context in dist/image/: the Linux
# single executable and the files it needs, nothing else. No base image, so nothing is pulled.
FROM scratch
COPY rootfs/ /
# Node trusts its own CA list; this adds the system's, and a private CA can be mounted over the file.
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /root
ENTRYPOINT ["/usr/local/bin/s3dock"]
