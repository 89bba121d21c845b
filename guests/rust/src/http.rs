//! Small helpers over `wasi:http` for handlers: read a request, answer it,
//! make an outgoing request. The host adds CLIENT spans and propagation.

use std::io::{Read as _, Write as _};
pub use wasip2;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

/// A request, read whole.
pub struct Request {
    pub method: String,
    pub path_with_query: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Read the method, path, headers and body of an incoming request.
    ///
    /// Errors when the body does not arrive whole: the client ended it
    /// before its `Content-Length` or its last chunk, or the connection
    /// failed. Answer such a request 400; never act on part of a body.
    pub fn read(request: IncomingRequest) -> Result<Request, Error> {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(m) => m,
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let headers = request.headers().entries();
        let body = match request.consume() {
            Ok(b) => read_body(b).map_err(|e| Error(format!("the request body {e}")))?,
            Err(()) => Vec::new(),
        };
        Ok(Request {
            method,
            path_with_query,
            headers,
            body,
        })
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_with_query.split('?').next().unwrap_or("/")
    }

    /// A query parameter (percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.path_with_query.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read an incoming body to its end; the error says how it failed.
fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "cannot be read".to_string())?;
        stream
            .read_to_end(&mut data)
            .map_err(|e| format!("ended early after {} bytes: {e}", data.len()))?;
    }
    // Trailers, and any error the body ends with.
    let trailers = IncomingBody::finish(body);
    loop {
        match trailers.get() {
            Some(Ok(Ok(_))) => return Ok(data),
            Some(Ok(Err(e))) => return Err(format!("failed at its end: {e:?}")),
            Some(Err(())) => return Ok(data),
            None => trailers.subscribe().block(),
        }
    }
}

/// Answer with a status, a content type and a body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(mut stream) = outgoing.write() {
        // Write in chunks: a wasi output stream accepts at most 4096 bytes per blocking write.
        for chunk in body.chunks(4096) {
            if stream.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// A response to an outgoing request.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An outgoing request failed, or a body did not arrive whole.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Send a request (`http://component-id/path` calls another component of
/// the app in-process) and read the whole response.
pub fn send(method: &str, url: &str, body: &[u8]) -> Result<Response, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error(format!("`{url}` is not an absolute URL")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if !body.is_empty() {
        let _ = headers.append("content-type", b"application/json");
    }
    let request = OutgoingRequest::new(headers);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_string()),
    }));
    request
        .set_authority(Some(authority))
        .map_err(|()| Error(format!("invalid authority `{authority}`")))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| Error(format!("invalid path `{path}`")))?;
    let outgoing_body = request
        .body()
        .map_err(|()| Error("request body unavailable".into()))?;
    if !body.is_empty() {
        let mut stream = outgoing_body
            .write()
            .map_err(|()| Error("request body stream unavailable".into()))?;
        for chunk in body.chunks(4096) {
            stream.write_all(chunk).map_err(|e| Error(e.to_string()))?;
        }
        let _ = stream.flush();
    }
    let future = outgoing_handler::handle(request, None).map_err(|e| Error(format!("{e:?}")))?;
    OutgoingBody::finish(outgoing_body, None).map_err(|e| Error(format!("{e:?}")))?;
    let response = loop {
        match future.get() {
            Some(result) => break result.map_err(|()| Error("response already taken".into()))?,
            None => future.subscribe().block(),
        }
    }
    .map_err(|e| Error(format!("{e:?}")))?;
    let status = response.status();
    let data = match response.consume() {
        Ok(b) => read_body(b).map_err(|e| Error(format!("the response body {e}")))?,
        Err(()) => Vec::new(),
    };
    Ok(Response { status, body: data })
}
