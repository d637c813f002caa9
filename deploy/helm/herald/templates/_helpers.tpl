{{/* Names, labels and the pod pieces every Herald process shares. */}}

{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Pod annotations that roll the pods when the chart's ConfigMap or Secret changes. */}}
{{- define "herald.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The environment of every Herald container: the ConfigMap, then the secrets by reference only. */}}
{{- define "herald.envFrom" -}}
- configMapRef:
    name: {{ include "herald.fullname" . }}
{{- end -}}

{{- define "herald.secretEnv" -}}
{{- $secret := include "herald.secretName" . -}}
- name: HERALD_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secrets.keys.databaseUrl }}}
- name: HERALD_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secrets.keys.redisUrl }}}
- name: HERALD_ENCRYPTION_KEYS
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secrets.keys.encryptionKeys }}}
- name: HERALD_BOOTSTRAP_ADMIN_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secrets.keys.bootstrapAdminKey }}, optional: true}
{{- $extra := .Values.secrets.extraKeys }}
{{- if not .Values.secrets.existingSecret }}
{{- $extra = keys .Values.secrets.extra | sortAlpha }}
{{- end }}
{{- range $extra }}
- name: {{ . }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ . }}}
{{- end }}
{{- end -}}

{{- define "herald.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "herald.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Refuse values that would break graceful shutdown, before anything is applied. */}}
{{- define "herald.validate" -}}
{{- $minGrace := add (int .Values.sendTimeoutSeconds) 20 -}}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (int $minGrace) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed sendTimeoutSeconds + 20 s (%d): a warm shutdown finishes the running batch" (int .Values.worker.terminationGracePeriodSeconds) (int $minGrace)) -}}
{{- end -}}
{{- if and .Values.keda.enabled (not .Values.keda.redis.address) -}}
{{- fail "keda.redis.address (host:port of the Redis in HERALD_REDIS_URL) is required when keda.enabled" -}}
{{- end -}}
{{- if and .Values.keda.enabled .Values.keda.redis.passwordSecret.name (not .Values.keda.redis.passwordSecret.key) -}}
{{- fail "keda.redis.passwordSecret.key is required when keda.redis.passwordSecret.name is set" -}}
{{- end -}}
{{- end -}}
