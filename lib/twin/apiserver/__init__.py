"""The twin's Kubernetes API server: HTTPS on loopback in front of :mod:`twin.store`.

Real clients (kubectl 1.32, helm 4, the official Python client) talk to it exactly as to
a k3s server (the Kubernetes "API Concepts" reference lists what they rely on:
https://kubernetes.io/docs/reference/using-api/api-concepts/). One component
(``name = "apiserver"``) of the twin's runtime:

- at start it takes (or creates) the twin's CA, issues a serving certificate, makes a
  random bearer token and writes ``state_dir/kubeconfig``;
- it serves discovery, CRUD on every registered type (CRDs included), the four PATCH
  flavours (server-side apply with field managers and conflicts), watches with
  bookmarks and initial events, server-side Table output, ``/openapi/v2`` and
  ``/openapi/v3`` with the published schemas, validation (``fieldValidation``, 422
  causes, field labels), protobuf bodies of every GA kind, authentication and RBAC
  with the review APIs and ``TokenRequest``, ``exec`` and ``portforward``;
- :meth:`APIServer.outage` stops listening for a while (connections are refused, as
  while k3s restarts) and then listens again on the same port.

Layout (one module per kind of request; a new kind, such as exec or port-forward, is a
new route module mixed into :class:`APIServer` plus a line in its dispatch):

- ``server``: the component (TLS, token, kubeconfig, outages, auth, dispatch);
- ``routing``: resource paths into a ``Route``;
- ``responses``: ``Status`` errors, JSON responses, Accept negotiation;
- ``discovery``, ``openapi`` and ``schemas``: the documents clients read before anything else;
- ``admission`` and ``validation``: what every write must pass;
- ``auth`` and ``rbac``: who a request is and what it may do;
- ``remotecommand``, ``portforward`` and ``spdy``: streams into pods;
- ``resources``: get, list, create, update, delete, deletecollection;
- ``bodies``: request bodies (JSON, YAML, protobuf) and their shape checks;
- ``defaults``: what a create fills in (Service IPs and ports, apps/v1 defaults);
- ``patching``: the four PATCH flavours;
- ``subresources``: status, scale, finalize, exec, portforward, token; ``eviction``
  (PodDisruptionBudgets decide) and ``logs`` (container logs, follow) are mixed into it;
- ``watch``: watch streams, bookmarks, Table rows, expired versions.
"""
from __future__ import annotations

from .discovery import K8S_VERSION, version_key
from .responses import HTTPError, accept_table, status_body
from .routing import Route, parse_resource_path
from .server import APIServer

__all__ = ["APIServer", "HTTPError", "K8S_VERSION", "Route", "accept_table",
           "parse_resource_path", "status_body", "version_key"]
