//! examples/frontend-data: a JavaScript frontend calling a Python data
//! processor, one trace per request; a failure in the processor is marked
//! where it happened and on every span the 500 travels through.

use polytrace_tests::*;
use std::collections::BTreeSet;
use std::time::Duration;

async fn run(host: &Polytrace, receiver: &Receiver, name: &str) -> (Response, Vec<FlatSpan>) {
    let response = get(&host.url(&format!("/process/{name}"))).await;
    let spans = receiver.trace(&response.trace_id(), 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans: Vec<FlatSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == spans[0].trace_id)
        .collect();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    (response, spans)
}

fn find<'a>(spans: &'a [FlatSpan], service: &str, name: &str) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| s.service() == service && s.name == name)
        .unwrap_or_else(|| panic!("no {name} in {service}: {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn frontend_and_data_processor_share_one_trace() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up_dir(
        &repo_dir().join("examples/frontend-data"),
        &receiver,
        "http/protobuf",
        &[],
    );

    let (ok, spans) = run(&host, &receiver, "ada").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["result"], "ADA");
    let front = find(&spans, "frontend-api", "GET /process/:name");
    let logic = find(&spans, "frontend-api", "process-data-logic");
    let client = find(&spans, "frontend-api", "GET");
    let back = find(&spans, "data-processor", "GET /data/<name>");
    let internal = find(&spans, "data-processor", "process-data-internal");
    assert_eq!(logic.parent_span_id, front.span_id);
    assert_eq!(client.parent_span_id, logic.span_id);
    assert_eq!(back.parent_span_id, client.span_id);
    assert_eq!(internal.parent_span_id, back.span_id);
    assert_eq!(logic.attributes["user.name"], "ada");
    assert_eq!(internal.attributes["data.input_name"], "ada");
    assert_eq!(internal.attributes["data.result"], "ADA");
    assert_eq!(
        client.attributes["url.full"],
        "http://data-processor/data/ada"
    );
    assert!(spans.iter().all(|s| s.status_code == STATUS_UNSET));
    assert_eq!(front.resource["polytrace.guest.language"], "javascript");
    assert_eq!(back.resource["polytrace.guest.language"], "python");
    // The simulated work: ~50 ms in the frontend besides the call, and 5 ms
    // per character of the name in the processor.
    assert!(logic.duration >= client.duration + Duration::from_millis(50));
    assert!(internal.duration >= Duration::from_millis(15));
    let (long, spans) = run(&host, &receiver, "ada-lovelace-countess").await;
    assert_eq!(long.status, 200);
    let long_internal = find(&spans, "data-processor", "process-data-internal");
    assert!(long_internal.duration >= Duration::from_millis(105));
    assert!(long_internal.duration > internal.duration);

    let (failed, spans) = run(&host, &receiver, "error-ada").await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    // Every span on the path of the 500 is an error; the exception is
    // recorded where it was raised and where the frontend caught it.
    let errors: BTreeSet<(&str, &str)> = spans
        .iter()
        .filter(|s| s.status_code == STATUS_ERROR)
        .map(|s| (s.service(), s.name.as_str()))
        .collect();
    assert_eq!(
        errors,
        BTreeSet::from([
            ("data-processor", "process-data-internal"),
            ("data-processor", "GET /data/<name>"),
            ("frontend-api", "GET"),
            ("frontend-api", "process-data-logic"),
            ("frontend-api", "GET /process/:name"),
        ])
    );
    let internal = find(&spans, "data-processor", "process-data-internal");
    let raised = internal.event("exception").unwrap();
    assert_eq!(raised["exception.type"], "app.ProcessingError");
    assert!(
        raised["exception.stacktrace"]
            .as_str()
            .unwrap()
            .contains("Traceback")
    );
    assert!(internal.attr("data.result").is_none());
    let logic = find(&spans, "frontend-api", "process-data-logic");
    let caught = logic.event("exception").unwrap();
    assert_eq!(caught["exception.type"], "DataProcessorError");
    assert!(
        caught["exception.message"]
            .as_str()
            .unwrap()
            .contains("data-processor answered 500")
    );
    host.terminate();
}
