"""Input and output shapes of the accounts API. No logic: services decide, serializers describe."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import ApiKey, ApiKeyScope, Invitation, Membership, Role, User


class LoginInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="RS256 access token, valid for at most 5 minutes.")
    refresh = serializers.CharField(help_text="Refresh token; single use (rotated on refresh).")
    access_expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class RefreshInputSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=8192)


class MembershipSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Membership
        fields = ["project", "role"]


class MeSerializer(serializers.ModelSerializer):
    memberships = MembershipSerializer(many=True, read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "email", "first_name", "last_name", "is_staff", "date_joined", "memberships"]


class ApiKeySerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKeyScope.choices))
    is_usable = serializers.BooleanField(read_only=True)
    display = serializers.SerializerMethodField(help_text="The key's public part, safe to show.")

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "owner",
            "prefix",
            "display",
            "scopes",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_usable",
        ]

    def get_display(self, key: ApiKey) -> str:
        return f"ak_{key.prefix}_…"


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKeyScope.choices), min_length=1, max_length=3
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The full key. Shown only in this response; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class InvitationCreateInputSerializer(serializers.Serializer):
    email = serializers.EmailField()
    project = serializers.SlugField(required=False, allow_null=True, help_text="Slug of the project to join.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)
    valid_days = serializers.IntegerField(min_value=1, max_value=30, default=7)


class InvitationSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Invitation
        fields = ["id", "email", "project", "role", "created_by", "created_at", "expires_at", "accepted_at"]


class InvitationCreatedSerializer(InvitationSerializer):
    token = serializers.CharField(help_text="Send this to the invitee; shown only in this response.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token"]


class RegisterInputSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class JwkSerializer(serializers.Serializer):
    kty = serializers.CharField()
    use = serializers.CharField()
    alg = serializers.CharField()
    kid = serializers.CharField()
    n = serializers.CharField()
    e = serializers.CharField()


class JwksSerializer(serializers.Serializer):
    keys = JwkSerializer(many=True)
