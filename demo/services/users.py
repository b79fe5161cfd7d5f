"""Users: a leaf service, balanced round robin."""

from flask import jsonify

USER_COUNT = 50


def build(service):
    @service.app.get("/users/<int:user_id>")
    def user(user_id):
        if not 1 <= user_id <= USER_COUNT:
            return jsonify(error="no such user"), 404
        return {"id": user_id, "name": f"user {user_id}", "served_by": service.instance.id}
