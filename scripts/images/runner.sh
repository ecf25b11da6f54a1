#!/usr/bin/env bash
# Build the LOCAL job image for act: `-P ubuntu-latest=predeploy-test/runner:latest`.
#
#   scripts/images/runner.sh           # build unless the image exists
#   scripts/images/runner.sh --force   # rebuild
#
# What act needs from a job image when the workflow uses only `run:` steps and
# local Docker actions (`uses: ./`): a shell (bash is the default `run:` shell
# on ubuntu-* labels) and coreutils (`tail -f /dev/null` keeps the container
# up). act copies the workspace in and reads the action's build context back
# out through the Docker API, so tar/git are not needed. No node: we run no
# JavaScript action. Result: debootstrap --variant=minbase bookworm +
# ca-certificates (plus the CAs the host trusts), about 100 MB.
set -euo pipefail

TAG=${RUNNER_IMAGE:-predeploy-test/runner:latest}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/act-images.sh
. "$here/../act-images.sh"

force=0
for a in "$@"; do
    case $a in
    --force) force=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

if [ $force -eq 0 ] && act_images::image_exists "$TAG"; then
    echo "runner: $TAG exists (use --force to rebuild)" >&2
    exit 0
fi

act_images::as_root "$0" "$@"

work=$(act_images::workdir)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"

act_images::bootstrap "$root" ca-certificates
act_images::trust_host_cas "$root"

act_images::import "$root" "$TAG" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]'

docker run --rm --network none "$TAG" bash -c 'tail --version >/dev/null' || {
    docker image rm "$TAG" >/dev/null 2>&1 || true
    echo "runner: the new image does not work; removed it" >&2
    exit 1
}
