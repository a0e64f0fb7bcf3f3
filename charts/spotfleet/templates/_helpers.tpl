{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "spotfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "spotfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "spotfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spotfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spotfleet
{{- end }}

{{- define "spotfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spotfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spotfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spotfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the emptyDir for the default SQLite audit store is mounted. */}}
{{- define "spotfleet.dataDir" -}}/var/lib/spotfleet{{- end }}

{{/*
The rules the operator needs on the namespaced objects it works with: its
SpotPolicies (Kopf watches them and patches finalizers/annotations; the
operator's client gets one and patches its status), the credential Secrets
(get only, by name, in the policy's own namespace), and Events (Kopf posts
them through core/v1; events.k8s.io for clusters that route Events there).
*/}}
{{- define "spotfleet.namespacedRules" -}}
- apiGroups: ["spotfleet.dev"]
  resources: ["spotpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["spotfleet.dev"]
  resources: ["spotpolicies/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.peering.name }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
