//! `NetnsWorker`, the long-lived thread the CNI service wires pods on: a
//! job's netlink socket opened inside another namespace works there (a veth
//! made through it appears in that namespace only), the thread is back in
//! its home namespace before the job goes on and for the next job, jobs run
//! one after the other, and a job that panics stops the worker so that
//! later submissions fail instead of running in an unknown state. Run as
//! root, in namespaces the test creates.

use std::path::Path;

use tabby_dataplane::{Error, Netns as DpNetns, NetnsWorker, VethPair};
use tabby_testbed::Netns;

/// The inode of the calling thread's network namespace.
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("readlink ns")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn jobs_open_sockets_in_other_namespaces_and_return_home() {
    let home = Netns::new("dp-wk-home").expect("home");
    let pod = Netns::new("dp-wk-pod").expect("pod");
    let home_dp = DpNetns::named(home.name()).expect("home ns");
    // The worker's home is the namespace of the thread that starts it.
    let (worker, home_inode) = home_dp
        .run(|| {
            (
                NetnsWorker::start("test-worker").expect("start"),
                thread_netns(),
            )
        })
        .expect("enter home");
    assert_ne!(home_inode, thread_netns(), "the test thread moved");

    for round in 0..3 {
        let pod_dp = DpNetns::named(pod.name()).expect("pod ns");
        let name = format!("wk{round}");
        let task = worker
            .submit(move |visitor| {
                let before = thread_netns();
                let mut nl = visitor.netlink_in(&pod_dp).expect("socket in the pod");
                let after = thread_netns();
                // A veth made through the socket lands in the pod.
                nl.create_veth(
                    &VethPair {
                        name: name.clone(),
                        peer: format!("{name}p"),
                        ..Default::default()
                    },
                    None,
                )
                .expect("veth in the pod");
                (before, after, thread_netns())
            })
            .expect("submit");
        let (before, after, end) = task.join().expect("job result");
        assert_eq!(
            before, home_inode,
            "round {round}: job started away from home"
        );
        assert_eq!(
            after, home_inode,
            "round {round}: not back home after the visit"
        );
        assert_eq!(end, home_inode, "round {round}");
        let dev = format!(" wk{round}@");
        let in_pod = pod.ip_stdout(["-o", "link"]).expect("ip");
        assert!(in_pod.contains(&dev), "{dev} not in the pod: {in_pod}");
        let in_home = home.ip_stdout(["-o", "link"]).expect("ip");
        assert!(
            !in_home.contains(&dev),
            "{dev} in the worker's home: {in_home}"
        );
    }

    // A file that is not a network namespace cannot be entered: the visit
    // fails naming it, the worker stays home and keeps working.
    let not_netns = DpNetns::open(Path::new("/proc/self/ns/uts")).expect("open uts ns file");
    let failed = worker
        .submit(move |visitor| {
            let r = visitor.netlink_in(&not_netns).map(|_| ());
            (r, thread_netns())
        })
        .expect("submit")
        .join()
        .expect("result");
    let err = failed
        .0
        .expect_err("entered a UTS namespace as a network namespace");
    assert!(err.to_string().contains("/proc/self/ns/uts"), "{err}");
    assert_eq!(failed.1, home_inode);
    let still = worker.submit(|_| thread_netns()).expect("submit");
    assert_eq!(still.join().expect("result"), home_inode);
}

#[test]
fn a_panicking_job_stops_the_worker() {
    let worker = NetnsWorker::start("test-panics").expect("start");
    let ok = worker.submit(|_| 7).expect("submit");
    assert_eq!(ok.join().expect("result"), 7);
    let boom = worker
        .submit(|_| -> u32 { panic!("job failed on purpose") })
        .expect("submit");
    match boom.join() {
        Err(Error::NetnsWorkerStopped(name)) => assert_eq!(name, "test-panics"),
        other => panic!("expected NetnsWorkerStopped, got {other:?}"),
    }
    // The thread is gone: nothing more is accepted.
    let mut refused = false;
    for _ in 0..100 {
        match worker.submit(|_| 1) {
            Err(Error::NetnsWorkerStopped(_)) => {
                refused = true;
                break;
            }
            Ok(task) => assert!(task.join().is_err(), "a stopped worker ran a job"),
            Err(e) => panic!("unexpected error {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(refused, "the stopped worker still accepts jobs");
}
