{{/* Name of the chart, overridable. */}}
{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified prefix of every resource: <release>-<chart>, or the release name when it
already contains the chart name. */}}
{{- define "vigil.fullname" -}}
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

{{- define "vigil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "vigil.labels" -}}
helm.sh/chart: {{ include "vigil.chart" . }}
{{ include "vigil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of the predictor pods of both tracks. */}}
{{- define "vigil.predictor.selectorLabels" -}}
{{ include "vigil.selectorLabels" . }}
app.kubernetes.io/component: predictor
{{- end }}

{{/* Pod labels of one track: dict "root" $ "track" "stable|canary" "version" N. The rollout
controller and the PodMonitor read vigil.io/model-version and vigil.io/track. */}}
{{- define "vigil.predictor.podLabels" -}}
{{ include "vigil.predictor.selectorLabels" .root }}
vigil.io/track: {{ .track }}
vigil.io/model-version: {{ .version | quote }}
{{- end }}

{{/* The Vigil image reference (digest wins over tag). */}}
{{- define "vigil.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "vigil.redis.image" -}}
{{- if .Values.redis.image.digest }}
{{- printf "%s@%s" .Values.redis.image.repository .Values.redis.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag }}
{{- end }}
{{- end }}

{{- define "vigil.predictor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-predictor" (include "vigil.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vigil.redis.fullname" -}}
{{- printf "%s-redis" (include "vigil.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vigil.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "vigil.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret and key of the Redis password (chart-made or existing). */}}
{{- define "vigil.redis.secretName" -}}
{{- default (printf "%s-auth" (include "vigil.redis.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "vigil.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s:%d" (include "vigil.mlflow.fullname" .) (int .Values.mlflow.port) }}
{{- else }}
{{- required "mlflow.external.uri is required when mlflow.enabled is false" .Values.mlflow.external.uri }}
{{- end }}
{{- end }}

{{/* Restricted Pod Security Standard: the pod level. */}}
{{- define "vigil.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted Pod Security Standard: the container level. */}}
{{- define "vigil.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment of every Vigil container: secrets first (referenced by $(VAR) below). */}}
{{- define "vigil.env" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vigil.redis.secretName" . }}
      key: {{ .Values.redis.auth.existingSecretKey }}
- name: VIGIL_REDIS__URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/%d" (include "vigil.redis.fullname" .) (int .Values.redis.database) | quote }}
{{- else }}
- name: VIGIL_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.external.existingSecret is required when redis.enabled is false" .Values.redis.external.existingSecret }}
      key: url
{{- end }}
{{- end }}

{{/* The predictor container, for one track: dict "root" $ "version" N. */}}
{{- define "vigil.predictor.container" -}}
{{- $ := .root -}}
name: kserve-container
image: {{ include "vigil.image" $ }}
imagePullPolicy: {{ $.Values.image.pullPolicy }}
command: ["vigil"]
args: ["serve", {{ $.Values.model.name | quote }}, "--version", {{ .version | quote }}]
ports:
  - name: http1
    containerPort: {{ $.Values.predictor.port }}
    protocol: TCP
envFrom:
  - configMapRef:
      name: {{ include "vigil.fullname" $ }}-settings
env:
  {{- include "vigil.env" $ | trim | nindent 2 }}
  {{- with $.Values.predictor.tokenSecret }}
  - name: VIGIL_SERVING_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: token
  {{- end }}
resources:
  {{- toYaml $.Values.predictor.resources | nindent 2 }}
startupProbe:
  httpGet:
    path: /v2/health/live
    port: {{ $.Values.predictor.port }}
  periodSeconds: 5
  failureThreshold: {{ div $.Values.predictor.probes.startupSeconds 5 }}
livenessProbe:
  httpGet:
    path: /v2/health/live
    port: {{ $.Values.predictor.port }}
  periodSeconds: {{ $.Values.predictor.probes.periodSeconds }}
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /v2/health/ready
    port: {{ $.Values.predictor.port }}
  periodSeconds: {{ $.Values.predictor.probes.periodSeconds }}
  timeoutSeconds: 2
  failureThreshold: 2
securityContext:
  {{- include "vigil.containerSecurityContext" $ | nindent 2 }}
volumeMounts:
  - name: vigil-home
    mountPath: /var/lib/vigil
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* The predictor's pod spec fields (shared by the InferenceService and the Deployments). */}}
{{- define "vigil.predictor.podFields" -}}
serviceAccountName: {{ include "vigil.predictor.serviceAccountName" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ add .Values.predictor.gracePeriodSeconds 10 }}
securityContext:
  {{- include "vigil.podSecurityContext" (dict "uid" 10001) | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.predictor.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.predictor.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.predictor.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: vigil-home
    emptyDir: {}
  - name: tmp
    emptyDir: {}
{{- end }}

{{/* Plain mode: replicas of each track, split by the canary's traffic percent. */}}
{{- define "vigil.plain.canaryReplicas" -}}
{{- if and .Values.canary.enabled (gt (int .Values.canary.trafficPercent) 0) }}
{{- $c := int (ceil (divf (mul (int .Values.predictor.replicas) (int .Values.canary.trafficPercent)) 100)) }}
{{- max $c 1 }}
{{- else }}0{{- end }}
{{- end }}

{{- define "vigil.plain.stableReplicas" -}}
{{- $c := int (include "vigil.plain.canaryReplicas" .) }}
{{- if and .Values.canary.enabled (eq (int .Values.canary.trafficPercent) 100) }}0
{{- else }}{{ max (sub (int .Values.predictor.replicas) $c) 1 }}{{- end }}
{{- end }}

{{/* Plain mode: whether the primary is autoscaled ("true" or empty). Not while the canary
takes all the traffic: the primary then has no replicas. */}}
{{- define "vigil.plain.autoscaled" -}}
{{- if and .Values.autoscaling.enabled (not (and .Values.canary.enabled (eq (int .Values.canary.trafficPercent) 100))) }}true{{- end }}
{{- end }}
