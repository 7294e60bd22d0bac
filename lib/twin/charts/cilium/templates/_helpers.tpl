{{/*
Helpers of the twin's stand-in cilium chart. Written for the twin; the names of the
objects, labels and keys they produce follow cilium 1.19.3.
*/}}

{{/* Namespace of every namespaced object except those in cilium-secrets. */}}
{{- define "standin.ns" -}}
{{- .Values.namespaceOverride | default .Release.Namespace -}}
{{- end -}}

{{/*
An image reference from a values block {override, repository, tag, digest, useDigest}.
Usage: include "standin.image" (dict "img" .Values.image "suffix" "" "digest" .Values.image.digest)
*/}}
{{- define "standin.image" -}}
{{- $img := .img -}}
{{- if $img.override -}}
{{- $img.override -}}
{{- else -}}
{{- $ref := printf "%s%s" $img.repository (.suffix | default "") -}}
{{- if $img.tag -}}{{- $ref = printf "%s:%s" $ref $img.tag -}}{{- end -}}
{{- if and $img.useDigest .digest -}}{{- $ref = printf "%s@%s" $ref .digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* Is the separate cilium-envoy DaemonSet on? (null means yes in 1.19) */}}
{{- define "standin.envoyEnabled" -}}
{{- if not .Values.l7Proxy -}}
false
{{- else if kindIs "invalid" .Values.envoy.enabled -}}
true
{{- else -}}
{{- .Values.envoy.enabled | toString -}}
{{- end -}}
{{- end -}}

{{/*
The API server host and port, as quoted YAML scalars. "auto" reads the kubeadm
cluster-info ConfigMap, which does not exist on k3s: like the real chart, it fails then.
*/}}
{{- define "standin.apiServer" -}}
{{- $host := .Values.k8sServiceHost | toString -}}
{{- $port := .Values.k8sServicePort | toString -}}
{{- if eq $host "auto" -}}
  {{- $cmNs := .Values.k8sServiceLookupNamespace | default "kube-public" -}}
  {{- $cmName := .Values.k8sServiceLookupConfigMapName | default "cluster-info" -}}
  {{- $cm := lookup "v1" "ConfigMap" $cmNs $cmName -}}
  {{- if not $cm -}}
    {{- fail (printf "ConfigMap %s/%s not found, please create it or set k8sServiceHost to a valid value" $cmNs $cmName) -}}
  {{- end -}}
  {{- $kc := index $cm.data "kubeconfig" | fromYaml -}}
  {{- $server := (index $kc.clusters 0).cluster.server | trimPrefix "https://" -}}
  {{- $parts := splitList ":" $server -}}
  {{- $host = index $parts 0 -}}
  {{- $port = index $parts 1 -}}
{{- end -}}
{{- dict "host" $host "port" $port | toJson -}}
{{- end -}}

{{/*
KUBERNETES_SERVICE_HOST/PORT env entries (list items at column 0, to be nindented).
Present only when k8sServiceHost or k8sServiceHostRef is set, as in the real chart.
*/}}
{{- define "standin.apiServerEnv" -}}
{{- $api := include "standin.apiServer" . | fromJson -}}
{{- if and .Values.k8sServiceHostRef.name .Values.k8sServiceHostRef.key }}
- name: KUBERNETES_SERVICE_HOST
  valueFrom:
    configMapKeyRef:
      name: {{ .Values.k8sServiceHostRef.name }}
      key: {{ .Values.k8sServiceHostRef.key }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $api.port | quote }}
{{- end }}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ $api.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $api.port | quote }}
{{- end }}
{{- end -}}

{{/* Env entries every Cilium component gets: the node name and its namespace. */}}
{{- define "standin.podEnv" -}}
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      apiVersion: v1
      fieldPath: spec.nodeName
- name: CILIUM_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      apiVersion: v1
      fieldPath: metadata.namespace
{{- end -}}

{{/* Do the Hubble TLS secrets come from helm itself? */}}
{{- define "standin.hubbleHelmTLS" -}}
{{- and .Values.hubble.enabled .Values.hubble.tls.enabled .Values.hubble.tls.auto.enabled (eq .Values.hubble.tls.auto.method "helm") | toString -}}
{{- end -}}

{{/*
The shared CA, computed once per render and stored on the root context: the user's
tls.ca, else the cilium-ca Secret already in the cluster (lookup; empty under
`helm template`), else a fresh genCA. Re-using the stored CA keeps upgrades from
rotating every Hubble certificate.
*/}}
{{- define "standin.ca" -}}
{{- if not (hasKey . "standinCA") -}}
  {{- $ca := dict -}}
  {{- if and .Values.tls.ca.cert .Values.tls.ca.key -}}
    {{- $ca = buildCustomCert .Values.tls.ca.cert .Values.tls.ca.key -}}
  {{- else -}}
    {{- $existing := lookup "v1" "Secret" (include "standin.ns" .) "cilium-ca" -}}
    {{- if and $existing (index ($existing.data | default dict) "ca.crt") (index ($existing.data | default dict) "ca.key") -}}
      {{- $ca = buildCustomCert (index $existing.data "ca.crt") (index $existing.data "ca.key") -}}
    {{- else -}}
      {{- $ca = genCA "Cilium CA" (int .Values.tls.ca.certValidityDuration) -}}
    {{- end -}}
  {{- end -}}
  {{- $_ := set . "standinCA" $ca -}}
{{- end -}}
{{- end -}}

{{/*
A kubernetes.io/tls Secret's data block signed by the shared CA, re-using the existing
Secret's pair when there is one. Usage: include "standin.tlsData" (dict "root" $ "name"
"hubble-server-certs" "cn" "..." "dns" (list ...))
*/}}
{{- define "standin.tlsData" -}}
{{- $root := .root -}}
{{- $_ := include "standin.ca" $root -}}
{{- $ca := $root.standinCA -}}
{{- $crt := "" -}}
{{- $key := "" -}}
{{- $existing := lookup "v1" "Secret" (include "standin.ns" $root) .name -}}
{{- if and $existing (index ($existing.data | default dict) "tls.crt") (index ($existing.data | default dict) "tls.key") -}}
  {{- $crt = index $existing.data "tls.crt" -}}
  {{- $key = index $existing.data "tls.key" -}}
{{- else -}}
  {{- $cert := genSignedCert .cn nil .dns (int $root.Values.hubble.tls.auto.certValidityDuration) $ca -}}
  {{- $crt = $cert.Cert | b64enc -}}
  {{- $key = $cert.Key | b64enc -}}
{{- end -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $crt }}
tls.key: {{ $key }}
{{- end -}}
