//! A backup's page and its file browser. Waits for `cairn_api::browse` (branch
//! helper-browse): until it is merged every route here answers 503 and says so.

use axum::response::IntoResponse;

use super::state::UiError;

fn waiting() -> UiError {
    UiError::BadRequest("the file browser needs cairn_api::browse, not merged yet".into())
}

pub async fn backup() -> impl IntoResponse {
    waiting()
}

pub async fn file() -> impl IntoResponse {
    waiting()
}

pub async fn tar() -> impl IntoResponse {
    waiting()
}
