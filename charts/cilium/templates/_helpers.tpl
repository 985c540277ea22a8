{{/* The agent's image reference. */}}
{{- define "cilium.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if and .Values.image.useDigest .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The operator's image reference; empty fields fall back to image.*. */}}
{{- define "cilium.operator.image" -}}
{{- $op := .Values.operator.image -}}
{{- $repository := $op.repository | default .Values.image.repository -}}
{{- $tag := $op.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- $digest := $op.digest | default .Values.image.digest -}}
{{- $useDigest := or $op.useDigest .Values.image.useDigest -}}
{{- if and $useDigest $digest -}}
{{ $repository }}@{{ $digest }}
{{- else -}}
{{ $repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "cilium.operator.pullPolicy" -}}
{{ .Values.operator.image.pullPolicy | default .Values.image.pullPolicy }}
{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "cilium.labels" -}}
app.kubernetes.io/part-of: cilium
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Environment both binaries get: namespace, log level, apiserver address. */}}
{{- define "cilium.env" -}}
- name: CILIUM_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: RUST_LOG
  value: {{ ternary "debug" "info" .Values.debug.enabled | quote }}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ required "k8sServicePort is required with k8sServiceHost" .Values.k8sServicePort | quote }}
{{- end }}
{{- end -}}

{{/* Volumes of the kvstore configuration (etcd.enabled). */}}
{{- define "cilium.etcd.volumes" -}}
{{- if .Values.etcd.enabled }}
- name: etcd-config-path
  configMap:
    name: cilium-config
    defaultMode: 256 # 0400
    items:
      - key: etcd-config
        path: etcd.config
{{- if .Values.etcd.ssl }}
- name: etcd-secrets
  secret:
    secretName: cilium-etcd-secrets
    defaultMode: 256 # 0400
{{- end }}
{{- end }}
{{- end -}}

{{- define "cilium.etcd.volumeMounts" -}}
{{- if .Values.etcd.enabled }}
- name: etcd-config-path
  mountPath: /var/lib/etcd-config
  readOnly: true
{{- if .Values.etcd.ssl }}
- name: etcd-secrets
  mountPath: /var/lib/etcd-secrets
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Checks the schema cannot express. */}}
{{- define "cilium.validate" -}}
{{- if not (or .Values.ipv4.enabled .Values.ipv6.enabled) -}}
{{- fail "ipv4.enabled and ipv6.enabled are both false: enable at least one family" -}}
{{- end -}}
{{- if and .Values.ipv4.enabled (empty .Values.ipam.operator.clusterPoolIPv4PodCIDRList) -}}
{{- fail "ipv4.enabled needs ipam.operator.clusterPoolIPv4PodCIDRList" -}}
{{- end -}}
{{- if and .Values.ipv6.enabled (empty .Values.ipam.operator.clusterPoolIPv6PodCIDRList) -}}
{{- fail "ipv6.enabled needs ipam.operator.clusterPoolIPv6PodCIDRList" -}}
{{- end -}}
{{- if and .Values.etcd.enabled (empty .Values.etcd.endpoints) -}}
{{- fail "etcd.enabled needs etcd.endpoints" -}}
{{- end -}}
{{- $tls := .Values.etcd.tls -}}
{{- if and (or $tls.ca $tls.cert $tls.key) (not (and $tls.ca $tls.cert $tls.key)) -}}
{{- fail "etcd.tls: set all of ca, cert and key, or none (then create the Secret cilium-etcd-secrets yourself)" -}}
{{- end -}}
{{- if .Values.clustermesh.config.enabled -}}
{{- if not .Values.etcd.enabled -}}
{{- fail "clustermesh.config.enabled needs etcd.enabled: remote clusters read this cluster's kvstore" -}}
{{- end -}}
{{- if eq (int .Values.cluster.id) 0 -}}
{{- fail "clustermesh.config.enabled needs cluster.id between 1 and 255" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range .Values.clustermesh.config.clusters -}}
{{- if eq .name $.Values.cluster.name -}}
{{- fail (printf "clustermesh.config.clusters: %q is this cluster's own name (cluster.name)" .name) -}}
{{- end -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "clustermesh.config.clusters: %q is listed twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- end -}}
{{- end -}}
