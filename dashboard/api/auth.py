"""``POST /api/auth/token/``: a DRF token for a username and password, throttled like every login.

The password goes through ``django.contrib.auth.authenticate`` with the underlying HttpRequest, so
django-axes counts each failure and, past AXES_FAILURE_LIMIT, answers 429 (dashboard/lockout.py).
"""

from django.contrib.auth import authenticate
from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.schemas import BAD_REQUEST, DetailSerializer

# DRF refuses NUL in any text field; the schema says so with a pattern.
NO_NUL = RegexValidator(r"^[^\u0000]*$", "Null characters are not allowed.")


class CredentialsSerializer(serializers.Serializer):
    # Matched as sent: a username of whitespace is a wrong username (401), not a blank field (400).
    username = serializers.CharField(min_length=1, max_length=150, trim_whitespace=False, validators=[NO_NUL])
    password = serializers.CharField(
        min_length=1, max_length=4096, trim_whitespace=False, validators=[NO_NUL], style={"input_type": "password"}
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")


class ObtainTokenView(APIView):
    # Token authentication only for its challenge: without one, DRF turns a 401 into a 403.
    authentication_classes = [TokenAuthentication]
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="auth_token_create",
        request=CredentialsSerializer,
        responses={
            200: TokenSerializer,
            400: BAD_REQUEST,
            401: OpenApiResponse(DetailSerializer, description="The username and password do not match."),
            415: OpenApiResponse(DetailSerializer, description="The body is not JSON."),
            429: OpenApiResponse(
                DetailSerializer,
                description="Too many failed logins for this username from this address: locked out for a while.",
            ),
        },
        auth=[],
        description="The caller's API token (created on first use), for a username and password.",
    )
    def post(self, request: Request) -> Response:
        credentials = CredentialsSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        # The HttpRequest, not DRF's wrapper: django-axes marks the lockout on the request its
        # middleware sees.
        user = authenticate(request._request, **credentials.validated_data)
        if user is None or not user.is_active:
            raise AuthenticationFailed("The username and password do not match.")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
