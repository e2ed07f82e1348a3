// Video jobs: start one on a video in S3, follow its status and progress, and draw its result as a
// timeline (who is seen when). Rekognition has no "list jobs" call, so the console remembers the
// JobIds it started (in this browser's local storage) and accepts any JobId typed in.
import { all, call } from "./api.js";
import { guarded, h, pct, table } from "./dom.js";

const STORE = "facebank.videoJobs";
// Start operation -> the Get operation, its result member and how a result item names "who".
const KINDS = {
  FaceDetection: { get: "GetFaceDetection", member: "Faces", who: () => "faces" },
  FaceSearch: {
    get: "GetFaceSearch",
    member: "Persons",
    who: (item) => item.FaceMatches?.[0]?.Face?.ExternalImageId || item.FaceMatches?.[0]?.Face?.FaceId || `person ${item.Person.Index}`,
  },
  PersonTracking: { get: "GetPersonTracking", member: "Persons", who: (item) => `person ${item.Person.Index}` },
  CelebrityRecognition: { get: "GetCelebrityRecognition", member: "Celebrities", who: (item) => item.Celebrity.Name },
};

function remembered() {
  return JSON.parse(localStorage.getItem(STORE) || "[]");
}

function remember(job) {
  const jobs = remembered().filter((j) => j.JobId !== job.JobId);
  localStorage.setItem(STORE, JSON.stringify([job, ...jobs].slice(0, 50)));
}

export async function videosPage(main, jobId, kind) {
  if (jobId) return jobPage(main, jobId, kind);
  const ids = await all("ListCollections", {}, "CollectionIds");
  const form = {
    kind: h("select", { name: "kind" }, Object.keys(KINDS).map((k) => h("option", { value: k }, k))),
    bucket: h("input", { name: "bucket", required: true, placeholder: "bucket" }),
    name: h("input", { name: "name", required: true, placeholder: "clips/video.mp4" }),
    collection: h("select", { name: "collection" }, ids.map((id) => h("option", { value: id }, id))),
  };
  const start = async (event) => {
    event.preventDefault();
    const kind = form.kind.value;
    const params = { Video: { S3Object: { Bucket: form.bucket.value.trim(), Name: form.name.value.trim() } } };
    if (kind === "FaceSearch") params.CollectionId = form.collection.value;
    const result = await guarded(() => call(`Start${kind}`, params));
    remember({ JobId: result.JobId, kind, video: `${params.Video.S3Object.Bucket}/${params.Video.S3Object.Name}`, started: Date.now() });
    location.hash = `#videos/${encodeURIComponent(result.JobId)}/${kind}`;
  };
  const typed = { id: h("input", { name: "jobId", required: true, placeholder: "JobId" }), kind: h("select", { name: "jobKind" }, Object.keys(KINDS).map((k) => h("option", { value: k }, k))) };
  const open = (event) => {
    event.preventDefault();
    remember({ JobId: typed.id.value.trim(), kind: typed.kind.value, video: "", started: Date.now() });
    location.hash = `#videos/${encodeURIComponent(typed.id.value.trim())}/${typed.kind.value}`;
  };
  const jobs = remembered();
  const statuses = await Promise.all(
    jobs.map((job) => call(KINDS[job.kind].get, { JobId: job.JobId, MaxResults: 1 }).catch((error) => ({ JobStatus: error.type, StatusMessage: error.message }))),
  );
  main.replaceChildren(
    h("h1", {}, "Video jobs"),
    h(
      "form",
      { onsubmit: start },
      h("label", {}, "Start ", form.kind),
      h("label", {}, " on s3:// ", form.bucket, " / ", form.name),
      h("label", {}, " collection (FaceSearch) ", form.collection),
      h("button", { type: "submit" }, "Start"),
    ),
    h("form", { onsubmit: open }, h("label", {}, "Open a JobId ", typed.id), typed.kind, h("button", { type: "submit" }, "Open")),
    jobs.length
      ? table(
          ["JobId", "Kind", "Video", "Status", "Message"],
          jobs.map((job, i) => [
            h("a", { href: `#videos/${encodeURIComponent(job.JobId)}/${job.kind}` }, job.JobId),
            job.kind,
            job.video || "-",
            statuses[i].JobStatus,
            statuses[i].StatusMessage || "",
          ]),
        )
      : h("p", {}, "No jobs started from this browser yet."),
  );
}

async function jobPage(main, jobId, kindName) {
  const kind = KINDS[kindName] || KINDS.FaceDetection;
  const first = await call(kind.get, { JobId: jobId, MaxResults: 1 });
  const head = [
    h("h1", {}, `${kindName} job`),
    h("p", {}, h("code", {}, jobId), ` ${first.JobStatus}`, first.StatusMessage ? `: ${first.StatusMessage}` : "", " ", h("a", { href: "#videos" }, "All jobs")),
  ];
  if (first.JobStatus === "IN_PROGRESS") {
    main.replaceChildren(...head, h("p", {}, "Refreshing every 2 seconds…"));
    setTimeout(() => location.hash.startsWith(`#videos/${encodeURIComponent(jobId)}`) && jobPage(main, jobId, kindName), 2000);
    return;
  }
  const items = first.JobStatus === "SUCCEEDED" ? await all(kind.get, { JobId: jobId, MaxResults: 1000 }, kind.member) : [];
  const meta = first.VideoMetadata || {};
  main.replaceChildren(
    ...head,
    h("p", {}, `${items.length} result item(s); video ${((meta.DurationMillis || 0) / 1000).toFixed(1)} s, ${meta.FrameWidth || "?"}x${meta.FrameHeight || "?"}`),
    timeline(items, kind.who, meta.DurationMillis || Math.max(1, ...items.map((i) => i.Timestamp))),
  );
}

// One row per "who", a tick at each timestamp they are seen (positioned as a share of the video).
function timeline(items, who, duration) {
  const rows = new Map();
  for (const item of items) {
    const name = who(item);
    if (!rows.has(name)) rows.set(name, []);
    rows.get(name).push(item.Timestamp);
  }
  if (!rows.size) return h("p", {}, "Nobody seen.");
  const axis = h("div", { className: "axis" }, h("span", { className: "who" }, ""), h("div", { className: "track" }, h("span", {}, "0 s"), h("span", {}, `${(duration / 1000).toFixed(1)} s`)));
  return h(
    "div",
    { className: "timeline" },
    axis,
    [...rows].map(([name, stamps]) => {
      const track = h("div", { className: "track" });
      for (const ms of stamps) {
        const tick = h("div", { className: "tick", title: `${(ms / 1000).toFixed(2)} s` });
        tick.style.left = pct(Math.min(ms / duration, 1));
        track.append(tick);
      }
      return h("div", { className: "row" }, h("span", { className: "who" }, `${name} (${stamps.length})`), track);
    }),
  );
}
