//! The scheduler with a recording backend: batches really form, callers get their own rows, failures and
//! deadlines stay with their own request.

use std::sync::mpsc;

use bytes::Bytes;

use super::*;
use crate::backend::{Signature, TensorSpec};
use crate::tensor::DataType;

/// The values of every backend run, in order.
type Runs = Arc<Mutex<Vec<Vec<f32>>>>;

/// Echoes its single FP32 input. Records every run's rows and values; fails a run holding -1; blocks a run
/// holding 999 until the test releases it.
struct Recorder {
    signature: Signature,
    runs: Runs,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

struct RecorderSession {
    runs: Runs,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn device(&self) -> crate::backend::Device {
        crate::backend::Device::Cpu
    }
    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        Ok(Box::new(RecorderSession { runs: Arc::clone(&self.runs), release: Arc::clone(&self.release) }))
    }
}

impl Session for RecorderSession {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let values: Vec<f32> =
            inputs[0].data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        self.runs.lock().unwrap().push(values.clone());
        if values.contains(&999.0) {
            let _ = self.release.lock().unwrap().recv();
        }
        if values.contains(&-1.0) {
            return Err(BackendError::Compute("row -1 is poison".to_owned()));
        }
        Ok(inputs)
    }
}

fn rows(values: &[f32]) -> Tensor {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DataType::Fp32, vec![values.len(), 1], Bytes::from(data)).unwrap()
}

fn start(max_batch_size: usize, delay: Duration) -> (Arc<Scheduler>, Runs, mpsc::Sender<()>) {
    start_instances(max_batch_size, delay, 1)
}

fn start_instances(
    max_batch_size: usize,
    delay: Duration,
    instances: usize,
) -> (Arc<Scheduler>, Runs, mpsc::Sender<()>) {
    let (release_tx, release_rx) = mpsc::channel();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let spec = TensorSpec { name: "x".into(), datatype: DataType::Fp32, shape: vec![-1, 1], dim_names: vec![] };
    let backend = Arc::new(Recorder {
        signature: Signature { inputs: vec![spec.clone()], outputs: vec![spec], notes: vec![] },
        runs: Arc::clone(&runs),
        release: Arc::new(Mutex::new(release_rx)),
    });
    let config = SchedulerConfig {
        warmup: None,
        policy: BatchPolicy {
            max_batch_size,
            max_queue_delay: delay,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 64,
        },
        instances,
        default_timeout: None,
    };
    let metrics = crate::telemetry::Telemetry::new(Duration::from_secs(60)).version("test", 1, &[], Default::default());
    (Arc::new(Scheduler::start("test", backend, config, metrics).unwrap()), runs, release_tx)
}

fn spawn_infer(
    scheduler: &Arc<Scheduler>,
    values: Vec<f32>,
    timeout: Option<Duration>,
) -> tokio::task::JoinHandle<Reply> {
    let scheduler = Arc::clone(scheduler);
    tokio::spawn(async move {
        scheduler.infer(vec![rows(&values)], timeout.map(|t| Instant::now() + t)).await.map(|(outputs, _)| outputs)
    })
}

#[tokio::test]
async fn requests_in_one_window_share_a_run_and_get_their_own_rows() {
    let (scheduler, runs, _release) = start(16, Duration::from_millis(200));
    let requests: Vec<Vec<f32>> = vec![vec![1.0], vec![2.0, 2.5], vec![3.0, 3.5, 3.75]];
    let tasks: Vec<_> = requests.iter().map(|v| spawn_infer(&scheduler, v.clone(), None)).collect();
    for (task, sent) in tasks.into_iter().zip(&requests) {
        let outputs = task.await.unwrap().unwrap();
        assert_eq!(outputs, vec![rows(sent)]);
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].len(), 6);
}

#[tokio::test]
async fn a_failing_request_does_not_fail_its_batch_mates() {
    let (scheduler, runs, _release) = start(16, Duration::from_millis(200));
    let tasks: Vec<_> =
        [vec![1.0], vec![-1.0], vec![3.0]].into_iter().map(|v| spawn_infer(&scheduler, v, None)).collect();
    let results: Vec<Reply> = answers(tasks).await;
    assert_eq!(results[0].as_ref().unwrap(), &vec![rows(&[1.0])]);
    assert!(results[1].as_ref().unwrap_err().to_string().contains("row -1 is poison"));
    assert_eq!(results[2].as_ref().unwrap(), &vec![rows(&[3.0])]);
    // One stacked run that failed, then each request alone.
    assert_eq!(runs.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_request_queued_past_its_deadline_is_never_computed() {
    let (scheduler, runs, release) = start(16, Duration::ZERO);
    let busy = spawn_infer(&scheduler, vec![999.0], None);
    while runs.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let late = spawn_infer(&scheduler, vec![7.0], Some(Duration::from_millis(20)));
    assert!(matches!(late.await.unwrap(), Err(SchedulerError::DeadlineExceeded)));
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    // A request after the expired one is computed; the expired one never was.
    spawn_infer(&scheduler, vec![8.0], None).await.unwrap().unwrap();
    let runs = runs.lock().unwrap();
    assert!(runs.iter().all(|run| !run.contains(&7.0)), "{runs:?}");
    assert!(runs.iter().any(|run| run.contains(&8.0)));
}

#[tokio::test]
async fn an_idle_instance_is_woken_while_another_is_busy() {
    let (scheduler, runs, release) = start_instances(16, Duration::ZERO, 2);
    // Twice, so that the second round finds both instances asleep again after the first.
    for _ in 0..2 {
        let busy = spawn_infer(&scheduler, vec![999.0], None);
        let started = async {
            while !runs.lock().unwrap().iter().any(|run| run.contains(&999.0)) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), started).await.expect("no instance was woken");
        let answered = tokio::time::timeout(Duration::from_secs(5), spawn_infer(&scheduler, vec![7.0], None)).await;
        assert_eq!(answered.expect("the idle instance was not woken").unwrap().unwrap(), vec![rows(&[7.0])]);
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        runs.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn requests_that_cannot_be_batched_are_refused() {
    let (scheduler, _, _release) = start(4, Duration::ZERO);
    let too_many = scheduler.infer(vec![rows(&[1.0; 5])], None).await;
    assert!(matches!(too_many, Err(SchedulerError::BatchTooLarge { rows: 5, max: 4 })));
    let disagree = scheduler.infer(vec![rows(&[1.0]), rows(&[1.0, 2.0])], None).await;
    assert!(matches!(disagree, Err(SchedulerError::InvalidBatch(_))));
    let empty = scheduler.infer(vec![rows(&[])], None).await;
    assert!(matches!(empty, Err(SchedulerError::InvalidBatch(_))));
}

async fn answers(tasks: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[test]
fn warm_up_runs_every_batch_size_the_given_number_of_times() {
    let runs: Runs = Arc::new(Mutex::new(Vec::new()));
    let (_release_tx, release_rx) = mpsc::channel();
    let session = Box::new(RecorderSession { runs: Arc::clone(&runs), release: Arc::new(Mutex::new(release_rx)) });
    let warmup = Warmup { row: vec![rows(&[7.0])], batch_sizes: vec![1, 3], runs: 2 };
    warm_up(session, Some(warmup)).unwrap();
    let seven = |n: usize| vec![7.0; n];
    assert_eq!(*runs.lock().unwrap(), vec![seven(1), seven(1), seven(3), seven(3)]);

    let (_release_tx, release_rx) = mpsc::channel();
    let session = Box::new(RecorderSession { runs: Arc::clone(&runs), release: Arc::new(Mutex::new(release_rx)) });
    let poisoned = Warmup { row: vec![rows(&[-1.0])], batch_sizes: vec![2], runs: 1 };
    let error = warm_up(session, Some(poisoned)).err().unwrap().to_string();
    assert!(error.contains("warm-up failed on 2 row(s)"), "{error}");
}
