//! The handlers and the JSON error type.

use std::future::Future;

use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use fos_image::compose::Rect;
use fos_search::{Query, SearchError};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::AppState;

/// An error response: `{"error": {"code", "message"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code (`invalid_query`, `bad_image`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{}: {}", self.code, self.message);
        }
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<fos_image::ImageError> for ApiError {
    fn from(e: fos_image::ImageError) -> Self {
        match e {
            fos_image::ImageError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image_too_large",
                e.to_string(),
            ),
            _ => Self::new(StatusCode::BAD_REQUEST, "bad_image", e.to_string()),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Query(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_query", m),
            SearchError::Index(fos_index::IndexError::Invalid(m)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_query", m)
            }
            SearchError::Image(i) => i.into(),
            e => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "payload_too_large",
                format!(
                    "the request is larger than the upload limit: {}",
                    e.body_text()
                ),
            )
        } else {
            Self::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text())
        }
    }
}

/// Runs `f` under the request timeout.
async fn timed<T>(
    st: &AppState,
    f: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(st.limits.timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} s",
                st.limits.timeout.as_secs_f64()
            ),
        )),
    }
}

/// Runs CPU work on the blocking pool, at most `max_concurrent` at once.
async fn model_work<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = st.work.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
    })?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

/// Reads the `background` file part and the `query` text part.
async fn read_parts(mp: &mut Multipart) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    let (mut bg, mut q) = (None, None);
    while let Some(field) = mp.next_field().await? {
        match field.name() {
            Some("background") => bg = Some(field.bytes().await?.to_vec()),
            Some("query") => q = Some(field.bytes().await?.to_vec()),
            _ => {
                field.bytes().await?;
            }
        }
    }
    let bg =
        bg.ok_or_else(|| ApiError::bad("multipart part `background` (the image file) is missing"))?;
    let q = q.ok_or_else(|| ApiError::bad("multipart part `query` (JSON) is missing"))?;
    Ok((bg, q))
}

/// The background bytes and the parsed `query` part of a multipart request.
async fn parse_parts<T: DeserializeOwned>(mp: &mut Multipart) -> Result<(Vec<u8>, T), ApiError> {
    let (bg, q) = read_parts(mp).await?;
    let q = serde_json::from_slice(&q).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("query JSON: {e}"),
        )
    })?;
    Ok((bg, q))
}

/// Parses a `POST /api/search` request body exactly as the handler does:
/// the multipart parts (`content_type` carries the boundary), the query JSON,
/// the background image under `limits` (decoded, pixel cap enforced) and the
/// query's checks against the image. The fuzz target `request` drives this.
pub async fn parse_search_request(
    content_type: &str,
    body: Vec<u8>,
    limits: &crate::Limits,
) -> Result<(image::RgbImage, Query, Rect), ApiError> {
    use axum::extract::FromRequest;
    let req = axum::http::Request::builder()
        .method("POST")
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .map_err(|e| ApiError::bad(format!("request: {e}")))?;
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad(format!("not a multipart request: {e}")))?;
    let (bg, q): (Vec<u8>, Query) = parse_parts(&mut mp).await?;
    let opts = fos_image::decode::DecodeOptions {
        max_pixels: limits.max_pixels,
    };
    let img =
        fos_image::decode::decode_bytes(&bg, std::path::Path::new("background"), &opts)?.to_rgb8();
    let rect = q.validate(img.width(), img.height())?;
    Ok((img, q, rect))
}

pub async fn index() -> Html<&'static str> {
    Html(crate::INDEX_HTML)
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::OPENAPI,
    )
        .into_response()
}

pub async fn healthz(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"status": "ok", "cutouts": st.searcher.store().len(), "model": st.searcher.store().model()}),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

pub async fn categories(State(st): State<AppState>) -> Json<serde_json::Value> {
    let cats: Vec<serde_json::Value> = st
        .searcher
        .store()
        .categories()
        .into_iter()
        .map(|(name, n)| serde_json::json!({"name": name, "cutouts": n}))
        .collect();
    Json(serde_json::Value::Array(cats))
}

pub async fn foreground(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Ids are looked up in the library; nothing from the request becomes a path.
    let entry = st.searcher.store().get(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no cut-out with id {:?}",
                id.chars().take(100).collect::<String>()
            ),
        )
    })?;
    let path = std::path::PathBuf::from(&entry.path);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cut-out file of {id}: {e}"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

pub async fn search(
    State(st): State<AppState>,
    mut mp: Multipart,
) -> Result<Json<fos_search::Response>, ApiError> {
    let st2 = st.clone();
    timed(&st, async move {
        let (bg, q): (Vec<u8>, Query) = parse_parts(&mut mp).await?;
        let st3 = st2.clone();
        let resp = model_work(&st2, move || {
            let img = fos_image::decode::decode_bytes(
                &bg,
                std::path::Path::new("background"),
                &st3.decode(),
            )?
            .to_rgb8();
            Ok(st3.searcher.search(&img, &q)?)
        })
        .await?;
        Ok(Json(resp))
    })
    .await
}

#[derive(Deserialize)]
struct CompositeQuery {
    #[serde(rename = "box")]
    rect: [f64; 4],
    id: String,
}

pub async fn composite(
    State(st): State<AppState>,
    mut mp: Multipart,
) -> Result<Response, ApiError> {
    let st2 = st.clone();
    timed(&st, async move {
        let (bg, q): (Vec<u8>, CompositeQuery) = parse_parts(&mut mp).await?;
        let entry = st2.searcher.store().get(&q.id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no cut-out with id {:?}", q.id),
            )
        })?;
        let fg_path = std::path::PathBuf::from(&entry.path);
        let st3 = st2.clone();
        let png = model_work(&st2, move || {
            let img = fos_image::decode::decode_bytes(
                &bg,
                std::path::Path::new("background"),
                &st3.decode(),
            )?
            .to_rgb8();
            let check = Query::new(q.rect, "any");
            let rect: Rect = check.validate(img.width(), img.height())?;
            let fg = fos_image::decode::load_rgba(&fg_path, &st3.decode())?;
            let mut out = img;
            fos_image::compose::paste(&mut out, &fg, rect)?;
            Ok(fos_image::encode::png(
                out.as_raw(),
                out.width(),
                out.height(),
                3,
            )?)
        })
        .await?;
        Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "bnd";

    fn body(query: Option<&str>, image: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(img) = image {
            out.extend_from_slice(
                format!("--{B}\r\nContent-Disposition: form-data; name=\"background\"; filename=\"b.png\"\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(img);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(q) = query {
            out.extend_from_slice(
                format!("--{B}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n{q}\r\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out
    }

    async fn parse(body: Vec<u8>) -> Result<(image::RgbImage, Query, Rect), ApiError> {
        let limits = crate::Limits {
            max_pixels: 10_000,
            ..Default::default()
        };
        parse_search_request(&format!("multipart/form-data; boundary={B}"), body, &limits).await
    }

    #[tokio::test]
    async fn requests_parse_or_fail_with_a_client_error() {
        let png = fos_image::encode::png(&[120u8; 64 * 48 * 3], 64, 48, 3).unwrap();
        let good = r#"{"box": [10, 8, 20, 30], "category": "person", "k": 5}"#;
        let (img, q, r) = parse(body(Some(good), Some(&png))).await.unwrap();
        assert_eq!((img.width(), q.k, r.w, r.h), (64, 5, 20.0, 30.0));
        let fails = [
            (body(None, Some(&png)), "bad_request"),
            (body(Some(good), None), "bad_request"),
            (
                body(
                    Some(r#"{"box": ["a", 1, 2, 3], "category": "x"}"#),
                    Some(&png),
                ),
                "invalid_query",
            ),
            (
                body(
                    Some(r#"{"box": [60, 40, 20, 30], "category": "x"}"#),
                    Some(&png),
                ),
                "invalid_query",
            ),
            (
                body(
                    Some(r#"{"box": [1, 1, 0, 3], "category": "x"}"#),
                    Some(&png),
                ),
                "invalid_query",
            ),
            (body(Some(good), Some(b"not an image")), "bad_image"),
            (b"garbage".to_vec(), "bad_multipart"),
        ];
        for (b, code) in fails {
            let e = parse(b).await.unwrap_err();
            assert!(e.status().is_client_error(), "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
        }
        // Over the pixel cap: 413, decided from the header.
        let big = fos_image::encode::png(&[0u8; 200 * 100 * 3], 200, 100, 3).unwrap();
        let e = parse(body(Some(good), Some(&big))).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Not multipart at all.
        let limits = crate::Limits::default();
        let e = parse_search_request("application/json", b"{}".to_vec(), &limits)
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
