#!/usr/bin/env bash
# The chart, validated for real: `helm lint --strict` on the chart's own defaults (they lint
# clean, like any published chart's), `helm template` on those defaults refused with the list
# of required values, and `helm lint --strict` plus `helm template` for every values file in
# authgate/ci/, each rendering checked by kubeconform against the Kubernetes schemas.
# Needs helm and kubeconform (helm/install-tools.sh) and the dev extras (kubernetes-validate).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="${GOBIN:-${GOPATH:-${HOME}/go}/bin}:${PATH}"
chart="${here}/authgate"

status=0
shopt -s nullglob
values_files=("${chart}"/ci/*.yaml)
if [[ ${#values_files[@]} -eq 0 ]]; then
  echo "no values files in ${chart}/ci" >&2
  exit 1
fi
echo "=== defaults (values.yaml alone)"
helm lint --strict --quiet "${chart}" || status=1
if refusal="$(helm template authgate-ci "${chart}" 2>&1 >/dev/null)"; then
  echo "helm template accepted the defaults: required values are not enforced" >&2
  status=1
elif [[ "${refusal}" != *"required values are missing"*"config.public_url"* ]]; then
  echo "helm template refused the defaults without naming config.public_url:" >&2
  echo "${refusal}" >&2
  status=1
fi
for values in "${values_files[@]}"; do
  echo "=== $(basename "${values}")"
  helm lint --strict --quiet "${chart}" -f "${values}" || status=1
  helm template authgate-ci "${chart}" -f "${values}" --namespace authgate-ci \
    | "${here}/kubeconform.sh" || status=1
done
if [[ ${status} -ne 0 ]]; then
  echo "helm chart validation FAILED" >&2
else
  echo "helm chart validation passed (${#values_files[@]} values files)"
fi
exit "${status}"
