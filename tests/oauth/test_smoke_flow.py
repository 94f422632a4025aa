from tests.oauth.conftest import REDIRECT_URI, query


def test_code_flow_end_to_end(flow, issuer):
    response = flow.follow(flow.sign_in(flow.authorize()))
    assert response.status_code == 302
    params = query(response["Location"])
    assert params["state"] == "xyz-state"
    assert params["iss"] == issuer
    assert response["Location"].startswith(REDIRECT_URI)
    token = flow.token(params["code"])
    assert token.status_code == 200, token.content
    body = token.json()
    print(body)
    assert body["token_type"] == "Bearer"
    assert "id_token" in body
    info = flow.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200, info.content
    print(info.json())
