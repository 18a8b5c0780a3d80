;;; big-document.el --- Many chat-ai blocks, a long document, a long session, timed  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by bench/big_document_bench.py: emacs -Q --batch -L . -l bench/big-document.el
;; with CHAT_AI_BENCH_URL, CHAT_AI_BENCH_HELPER and CHAT_AI_BENCH_CASE set.
;; Each case prints one JSON object on its last line:
;;
;; - "stream N [MODEL]": N asynchronous blocks whose replies stream at
;;   once (from MODEL, "slow" if none), run by `org-babel-execute-buffer':
;;   the seconds that command takes to start them all and return, then,
;;   while the replies stream in, how late a 10 ms repeating timer
;;   fires; wall seconds, how many garbage collections ran and how long
;;   they took, and how many blocks ended with the whole reply;
;; - "start": the seconds from executing a block to its request line
;;   handed to the helper, for block 1 and block 1,000 of a 1,000-block
;;   document, and for a block with 100 earlier turns in its :session
;;   and one in a fresh session;
;; - "big BYTES": one block at the end of BYTES of Org text streaming
;;   a reply of 5,000 deltas, with the timer's lateness and the garbage
;;   collections.

;;; Code:

(require 'ob-chat-ai)

(defvar bench-url (getenv "CHAT_AI_BENCH_URL")
  "The loopback server's base URL.")

(defvar bench-lateness nil
  "How late the 10 ms timer fired, in seconds, the last first.")

(defvar bench-timer nil
  "The 10 ms timer.")

(defun bench-start-timer ()
  "Start the 10 ms timer, noting its lateness in `bench-lateness'."
  (let ((last nil))
    (setq bench-lateness nil
          bench-timer (run-at-time 0.01 0.01
                                   (lambda ()
                                     (let ((now (float-time)))
                                       (when last
                                         (push (max 0.0 (- now last 0.01)) bench-lateness))
                                       (setq last now)))))))

(defun bench-wait-for-jobs ()
  "Wait until no reply is on its way."
  (while ob-chat-ai--jobs
    (accept-process-output nil 0.005)))

(defun bench-warm-up ()
  "Run one short block, so that the helper runs and its providers are known."
  (with-temp-buffer
    (org-mode)
    (insert (format "#+begin_src chat-ai :model m :base-url %s :async no\nhi\n#+end_src\n"
                    bench-url))
    (goto-char (point-min))
    (org-babel-execute-src-block)))

(defun bench-block (model prompt &optional header)
  "Return the text of a block asking MODEL with PROMPT, with more HEADER args."
  (format "#+begin_src chat-ai :model %s :base-url %s%s\n%s\n#+end_src\n\n"
          model bench-url (if header (concat " " header) "") prompt))

(defun bench-stream (count model)
  "Stream COUNT replies from MODEL at once through `org-babel-execute-buffer'."
  (with-temp-buffer
    (org-mode)
    (dotimes (i count)
      (insert (format "* Question %d\n\n" i)
              (bench-block model (format "Answer %d: %s" i (make-string 110 ?x)))))
    (let ((started (float-time))
          (gcs gcs-done)
          (gc-time gc-elapsed))
      (org-babel-execute-buffer)
      (let ((command (- (float-time) started)))
        (bench-start-timer)
        (bench-wait-for-jobs)
        (cancel-timer bench-timer)
        (let ((elapsed (- (float-time) started))
              (answered 0))
          (goto-char (point-min))
          (while (re-search-forward "^: Answer [0-9]+: x+$" nil t)
            (cl-incf answered))
          `((seconds . ,elapsed)
            (command . ,command)
            (lateness . ,(vconcat bench-lateness))
            (gcs . ,(- gcs-done gcs))
            (gc-seconds . ,(- gc-elapsed gc-time))
            (answered . ,answered)))))))

(defvar bench-sent nil
  "When the last request line was handed to the helper, as a float time.")

(defun bench-note-send (_process what)
  "Note when WHAT, a request line that is no dry run, goes to the helper."
  (when (and (stringp what) (not (string-search "\"dry_run\":true" what))
             (string-search "\"body\"" what))
    (setq bench-sent (float-time))))

(defun bench-start-seconds (position)
  "Return the seconds from executing the block at POSITION to its request sent."
  (goto-char position)
  (setq bench-sent nil)
  (let ((started (float-time)))
    (org-babel-execute-src-block)
    (prog1 (- bench-sent started)
      (bench-wait-for-jobs))))

(defun bench-start (rounds)
  "Return the start costs of blocks far down and with long sessions, ROUNDS each."
  (advice-add 'ob-chat-ai--send :after #'bench-note-send)
  (let ((first nil) (last nil) (fresh nil) (long nil))
    (with-temp-buffer
      (org-mode)
      (dotimes (i 1000)
        (insert (format "* Block %d\n\n" i)
                (bench-block "m" (format "Question %d" i))
                (format "#+RESULTS:\n: Question %d\n\n" i)))
      (let ((one (save-excursion (goto-char (point-min))
                                 (search-forward "#+begin_src")
                                 (match-beginning 0)))
            (thousand (save-excursion (goto-char (point-max))
                                      (search-backward "#+begin_src"))))
        (bench-start-seconds one)
        (bench-start-seconds thousand)
        (dotimes (_ rounds)
          (push (bench-start-seconds one) first)
          (push (bench-start-seconds thousand) last))))
    (with-temp-buffer
      (org-mode)
      (dotimes (i 100)
        (insert (bench-block "m" (format "Question %d" i) ":session long")
                (format "#+RESULTS:\n: Question %d\n\n" i)))
      (let ((long-block (point-marker)))
        (insert (bench-block "m" "Question 100" ":session long"))
        (let ((fresh-block (point-marker)))
          (insert (bench-block "m" "Question 0" ":session fresh"))
          (bench-start-seconds long-block)
          (bench-start-seconds fresh-block)
          (dotimes (_ rounds)
            (push (bench-start-seconds long-block) long)
            (push (bench-start-seconds fresh-block) fresh)))))
    (advice-remove 'ob-chat-ai--send #'bench-note-send)
    `((first . ,(vconcat first)) (thousandth . ,(vconcat last))
      (fresh . ,(vconcat fresh)) (long . ,(vconcat long)))))

(defun bench-big (bytes)
  "Stream a reply of 5,000 deltas into a block after BYTES of Org text."
  (with-temp-buffer
    (org-mode)
    (let ((i 0))
      (while (< (buffer-size) bytes)
        (insert (format "* Section %d\n\nSome text of section %d, with a [[https://example.org][link]] \
and *some* /markup/.\n- an item\n- another\n\n" i i))
        (cl-incf i)))
    (insert (bench-block "long-5000" "Go." ":results raw drawer"))
    (goto-char (point-max))
    (search-backward "#+begin_src")
    ;; Org parses the buffer once, as it would have on opening the file.
    (org-element-cache-reset)
    (org-element-at-point)
    (bench-start-timer)
    (let ((started (float-time))
          (gcs gcs-done)
          (gc-time gc-elapsed))
      (org-babel-execute-src-block)
      (bench-wait-for-jobs)
      (cancel-timer bench-timer)
      `((seconds . ,(- (float-time) started))
        (lateness . ,(vconcat bench-lateness))
        (gcs . ,(- gcs-done gcs))
        (gc-seconds . ,(- gc-elapsed gc-time))
        (whole . ,(if (string-search "word4999" (buffer-string)) t :false))))))

(let* ((ob-chat-ai-async 'always)
       (ob-chat-ai-helper-command (list (getenv "CHAT_AI_BENCH_HELPER") "--serve"))
       (org-confirm-babel-evaluate nil)
       (inhibit-message t)
       (words (split-string (getenv "CHAT_AI_BENCH_CASE")))
       (argument (and (cdr words) (string-to-number (cadr words)))))
  (bench-warm-up)
  (princ (json-serialize
          (pcase (car words)
            ("stream" (bench-stream argument (or (nth 2 words) "slow")))
            ("start" (bench-start (or argument 5)))
            ("big" (bench-big argument)))))
  (terpri))

;;; big-document.el ends here
