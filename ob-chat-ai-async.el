;;; ob-chat-ai-async.el --- chat-ai replies that arrive while you work  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; An asynchronous chat-ai block returns a placeholder at once.  The
;; reply then streams over it as fixed-width lines, and when it is
;; complete the block is run again with the finished text, so that
;; Babel's own result handling (:results, :wrap, :post, :cache) puts it
;; in place.  Each running block is a job; the mode line shows how the
;; jobs are doing, and `ob-chat-ai-cancel' and `ob-chat-ai-cancel-all'
;; stop them.

;;; Code:

;;;; Requirements

(require 'cl-lib)
(require 'ob)
(require 'org-element)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-convert)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-tools)


;;;; Customization

(defcustom ob-chat-ai-async t
  "Whether \\[org-ctrl-c-ctrl-c] on a chat-ai block returns at once.
When it does, the reply streams into the block's results and then
goes through Babel's usual result handling.  nil means always wait
for the reply; t means answer asynchronously in an interactive
Emacs and wait in batch Emacs; `always' means asynchronously in
batch Emacs too, for programs that wait for the replies themselves.
The :async header arg (yes or no) decides for one block.  Blocks
whose text is needed at once always wait: during export, for
#+CALL:, :var and noweb references, and with :results silent or
:post."
  :type '(choice (const :tag "Always wait" nil)
                 (const :tag "Asynchronously when interactive" t)
                 (const :tag "Asynchronously, in batch Emacs too" always))
  :group 'ob-chat-ai)

;;;; Jobs

(defvar ob-chat-ai--finished-reply nil
  "The reply text to return at once, while a finished block is run again.")

(defconst ob-chat-ai--preview-limit 4000
  "How many characters of a streaming reply its preview shows, at most.")

(defconst ob-chat-ai--preview-line-width 200
  "How wide a line of a streaming reply's preview is, at most.")

(cl-defstruct (ob-chat-ai--job (:constructor ob-chat-ai--job-create)
                               (:copier nil))
  "A block whose reply is on its way, and where it is shown."
  (request nil :documentation "The helper request.")
  (block nil :documentation "A marker at the block's #+begin_src line.")
  (body nil :documentation "The body the request was made from.")
  (params nil :documentation "The processed header args of the block.")
  (placeholder nil :documentation "The line the preview shows until text comes.")
  (deltas nil :documentation "The delta events so far, the last one first.")
  (chars 0 :documentation "How many characters have come.")
  (thoughts nil :documentation "The reasoning events so far, the last one first.")
  (thought 0 :documentation "How many characters of thinking have come.")
  (started nil :documentation "When the request started, as a float time.")
  (overlay nil :documentation "The overlay that shows the reply as it streams.")
  (converter nil :documentation "The Markdown to Org converter, for :format org.")
  (shown nil :documentation "The text shown of the first choice, the last piece first.")
  (shown-at 0 :documentation "When the preview was last drawn, as a float time.")
  (stale nil :documentation "Non-nil when text came that the preview does not show yet.")
  (placed nil :documentation "The buffer's modification tick when the preview was placed.")
  (hash nil :documentation "The cache hash Babel gave the block, for a whole reply.")
  (envelope nil :documentation "The request last sent for the block.")
  (calls nil :documentation "The tool_call events of the reply so far, the last first.")
  (tools nil :documentation "The records of the tool calls run, then perhaps a note.")
  (rounds 0 :documentation "How many rounds of tool calls have run.")
  (stopped nil :documentation "Non-nil once the user has cancelled between tool calls.")
  (dropped nil :documentation "Non-nil once the job must leave the buffer alone.")
  (queued nil :documentation "The last queued event while the request waits its turn.")
  (retried nil :documentation "Non-nil once the request was tried again after a 429."))

(cl-defstruct (ob-chat-ai--run (:constructor ob-chat-ai--run-create)
                               (:copier nil))
  "The jobs started since none was running, counted as they end."
  (started 0 :documentation "How many jobs were started.")
  (answered 0 :documentation "How many ended with a reply.")
  (failed 0 :documentation "How many ended with an error.")
  (cancelled 0 :documentation "How many were cancelled.")
  (retried 0 :documentation "How many were tried again after a 429."))

(defvar ob-chat-ai--run nil
  "The counts of the jobs started since none was running.")

(defvar ob-chat-ai--run-goes-on nil
  "Non-nil while a job that ended lets others start, which belong to its run.")

(defvar ob-chat-ai--jobs nil
  "The blocks whose replies are on their way, the newest first.")

(defvar ob-chat-ai--after-job-hook nil
  "Functions run with the job, after it has ended and its reply is in.")

(defun ob-chat-ai--job-block-p (position)
  "Return non-nil when the block at POSITION of this buffer has a running job."
  (seq-some (lambda (job)
              (and (eq (ob-chat-ai--job-buffer job) (current-buffer))
                   (= (ob-chat-ai--job-block job) position)))
            ob-chat-ai--jobs))

(defvar ob-chat-ai--progress-timer nil
  "The timer that updates the progress shown while replies stream.")

(defvar ob-chat-ai--repaint-timer nil
  "The timer that draws the previews of the replies that have news.")

(defconst ob-chat-ai--repaint-delay 0.05
  "Seconds between text coming and the previews being drawn.")

(defconst ob-chat-ai--repaint-budget 0.008
  "Seconds one round of drawing previews may take; the rest wait their turn.")

(defvar ob-chat-ai--last-end 0
  "When the last finished reply was put in its block, as a float time.")

(defvar ob-chat-ai--ended nil
  "Finished replies that wait to be put in place, each (JOB . EVENT), first first.")

(defvar ob-chat-ai--ended-timer nil
  "The timer that puts the next waiting finished reply in place.")

(defconst ob-chat-ai--end-spacing 0.01
  "Seconds left free for other work between putting two finished replies in place.")

(defun ob-chat-ai--async-p (params)
  "Return non-nil when the block with PARAMS should answer asynchronously."
  (let ((async (assq :async params))
        (result-params (cdr (assq :result-params params))))
    (and (if async
             (not (eq (ob-chat-ai--boolean (cdr async)) :false))
           ob-chat-ai-async)
         (or (not noninteractive) (eq ob-chat-ai-async 'always))
         (not (bound-and-true-p org-export-current-backend))
         (not (ob-chat-ai--param params :post))
         (not (seq-intersection '("silent" "none" "file") result-params))
         (ob-chat-ai--at-src-block-p))))

(defun ob-chat-ai--at-src-block-p ()
  "Return non-nil when the block Babel is running is the one at point, here.
It is not when it runs a #+CALL: line or an inline block, nor when
it runs a block that another block refers to (:var, noweb): Babel
then still names the referring block as the one it runs."
  (let ((location org-babel-current-src-block-location))
    (and location
         (or (not (markerp location)) (eq (marker-buffer location) (current-buffer)))
         (let ((element (ob-chat-ai--element-at-point)))
           (and (eq (org-element-type element) 'src-block)
                (= (org-element-property :post-affiliated element) location))))))

(defvar ob-chat-ai--last-element nil
  "The element last parsed at point, and where.
It is (ELEMENT BUFFER TICK POINT MIN MAX): the buffer, its
`buffer-chars-modified-tick', point and the narrowing then.")

(defun ob-chat-ai--element-at-point ()
  "Return the element at point, as `org-element-at-point' does.
Starting a block asks for it several times; Org 9.5 parses the
section up to point each time, so the last answer is kept until the
buffer, point or narrowing changes."
  (let ((where (list (current-buffer) (buffer-chars-modified-tick)
                     (point) (point-min) (point-max))))
    (if (equal (cdr ob-chat-ai--last-element) where)
        (car ob-chat-ai--last-element)
      (let ((element (org-element-at-point)))
        (setq ob-chat-ai--last-element (cons element where))
        element))))

(defun ob-chat-ai--block-job ()
  "Return the job of the block Babel is running, or nil."
  (let ((location org-babel-current-src-block-location))
    (and location
         (seq-find (lambda (job)
                     (and (eq (ob-chat-ai--job-buffer job) (current-buffer))
                          (= (ob-chat-ai--job-block job) location)))
                   ob-chat-ai--jobs))))

(defvar ob-chat-ai--executing nil
  "Non-nil while Babel runs a chat-ai block, which may wait for the helper.
A reply that comes meanwhile is put in its block afterwards: Babel is
in the middle of changing the buffer, and holds positions in it.")

(defvar ob-chat-ai--dropped-jobs nil
  "The jobs of blocks run again, whose requests are still to be cancelled.")

(defun ob-chat-ai--drop-block-job (&optional later)
  "Cancel the request still running for the block Babel is running, if any.
Its reply is dropped: the block is being run again, and the job no
longer counts among those running.  With LATER, the
request is cancelled once no chat-ai block is being run, with those
of the other blocks run again meanwhile (see
`ob-chat-ai--cancel-dropped').  Return non-nil when there was one."
  (let ((job (ob-chat-ai--block-job)))
    (when job
      (setf (ob-chat-ai--job-dropped job) t
            ob-chat-ai--jobs (delq job ob-chat-ai--jobs))
      (when (ob-chat-ai--job-overlay job)
        (delete-overlay (ob-chat-ai--job-overlay job)))
      (cond
       ((not later) (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))
       (t (unless ob-chat-ai--dropped-jobs
            (run-at-time 0 nil #'ob-chat-ai--cancel-dropped))
          (push job ob-chat-ai--dropped-jobs)))
      t)))

(defun ob-chat-ai--cancel-dropped ()
  "Cancel the requests of the blocks run again, those still in the queue first.
A running request cancelled gives its turn to the next in line: were
that the request of another block run again, it would be sent for
nothing.  While a chat-ai block is being run (`org-babel-execute-buffer'
runs one after the other), wait: it may run one more again."
  (if ob-chat-ai--executing
      (run-at-time 0.05 nil #'ob-chat-ai--cancel-dropped)
    (let ((jobs (reverse ob-chat-ai--dropped-jobs)))
      (setq ob-chat-ai--dropped-jobs nil)
      (dolist (job (append (seq-filter #'ob-chat-ai--job-queued jobs)
                           (seq-remove #'ob-chat-ai--job-queued jobs)))
        (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))))))

(defun ob-chat-ai--start-job (envelope body params model &optional again)
  "Send ENVELOPE for the block with BODY and PARAMS; return a placeholder.
The placeholder says that the reply of MODEL is awaited.  Babel puts
it in the results and then runs `org-babel-after-execute-hook'; that
change is taken back at once, so the buffer is left as it was until
the reply is complete.  AGAIN says that an earlier request of the
block was cancelled for this one."
  (let* ((placeholder (ob-chat-ai-reply-placeholder model))
         (job (ob-chat-ai--job-create
               :block (copy-marker org-babel-current-src-block-location t)
               :body body
               :params (ob-chat-ai--keep-out-placeholder params)
               :placeholder placeholder
               :envelope envelope
               :started (float-time)
               :converter (and (ob-chat-ai--org-format-p params)
                               (ob-chat-ai-convert-create (ob-chat-ai--heading-level))))))
    (ob-chat-ai--job-send job)
    (unless (and (or ob-chat-ai--jobs ob-chat-ai--run-goes-on) ob-chat-ai--run)
      (setq ob-chat-ai--run (ob-chat-ai--run-create)))
    (cl-incf (ob-chat-ai--run-started ob-chat-ai--run))
    (push job ob-chat-ai--jobs)
    (ob-chat-ai--take-back-placeholder job again)
    (add-hook 'kill-buffer-hook #'ob-chat-ai--cancel-buffer-jobs nil t)
    (unless ob-chat-ai--progress-timer
      (setq ob-chat-ai--progress-timer
            (run-at-time 0.5 0.5 #'ob-chat-ai--show-progress)))
    (unless (member '(:eval (ob-chat-ai--mode-line)) global-mode-string)
      (setq global-mode-string
            (append global-mode-string '((:eval (ob-chat-ai--mode-line))))))
    placeholder))

(defun ob-chat-ai--placeholder-goes-in-p (params)
  "Return non-nil when Babel is to put in the placeholder of a block with PARAMS.
That is with :cache yes, and when PARAMS have no :result-params to
tell Babel otherwise; the placeholder is then taken back."
  (or (null (cdr (assq :result-params params))) (ob-chat-ai--yes-p params :cache)))

(defun ob-chat-ai--keep-out-placeholder (params)
  "Keep Babel from inserting a block's placeholder; return PARAMS for its job.
Babel puts what a block returns in place by the :result-params it
made for this run, once the block has returned: with \"none\" there
it leaves the buffer alone (newer Orgs), with \"silent\" it echoes
the text instead.  The job keeps a copy without them, for the
reply.  With :cache yes the placeholder goes in, to be taken back:
the hash Babel writes with it is the reply's."
  (let ((result-params (cdr (assq :result-params params))))
    (if (ob-chat-ai--placeholder-goes-in-p params)
        params
      (prog1 (cons (cons :result-params (copy-sequence result-params))
                   (assq-delete-all :result-params (copy-sequence params)))
        (nconc result-params (list "silent" "none"))))))

(defun ob-chat-ai--job-send (job)
  "Send the envelope of JOB, whose events then go to JOB."
  (setf (ob-chat-ai--job-request job)
        (ob-chat-ai-process-send
         (ob-chat-ai--job-envelope job)
         :on-delta (lambda (event) (ob-chat-ai--job-delta job event))
         :on-reasoning (lambda (event) (ob-chat-ai--job-reasoning job event))
         :on-tool-call (lambda (event) (push event (ob-chat-ai--job-calls job)))
         :on-retry (lambda (event) (ob-chat-ai--job-retry job event))
         :on-queue (lambda (event) (ob-chat-ai--job-queue job event))
         :on-finish (lambda (event) (ob-chat-ai--job-finish job event)))))

(defun ob-chat-ai--job-tool-round-p (job event)
  "Return non-nil when final EVENT of JOB asks to run the tools of its block."
  (and (not (ob-chat-ai--job-dropped job))
       (equal (alist-get 'type event) "done")
       (alist-get 'tools (alist-get 'body (ob-chat-ai--job-envelope job)))
       (ob-chat-ai-tools-calls
        (list :calls (reverse (ob-chat-ai--job-calls job))))
       (ob-chat-ai--job-block-live-p job)))

(defun ob-chat-ai--job-next-round (job event)
  "Run the tools that the reply of JOB, ended by EVENT, asks for, soon.
The placeholder names them; the block stays busy meanwhile."
  (let ((calls (ob-chat-ai-tools-calls
                (list :calls (reverse (ob-chat-ai--job-calls job))))))
    (setf (ob-chat-ai--job-placeholder job)
          (format "chat-ai: running tool %s..."
                  (mapconcat (lambda (call) (alist-get 'name call)) calls ", ")))
    (ob-chat-ai--job-show job)
    (run-at-time 0.05 nil #'ob-chat-ai--job-run-tools job calls event)))

(defun ob-chat-ai--job-run-tools (job requested event)
  "Run the tools REQUESTED by the reply of JOB, ended by EVENT; send the values.
The job ends instead when it was cancelled meanwhile, when the round
limit is reached, or when batch Emacs cannot confirm the calls.  While
the question of another block's tool is asked, it waits its turn."
  (let ((limit (ob-chat-ai-tools-max-rounds (ob-chat-ai--job-params job)))
        (answers nil))
    (cond
     ((or (ob-chat-ai--job-stopped job) (ob-chat-ai--job-dropped job)
          (not (ob-chat-ai--job-block-live-p job)))
      (ob-chat-ai--job-end job '((type . "error") (kind . "cancelled"))))
     (ob-chat-ai-tools--asking
      (run-at-time 0.2 nil #'ob-chat-ai--job-run-tools job requested event))
     ((>= (ob-chat-ai--job-rounds job) limit)
      (setf (ob-chat-ai--job-tools job)
            (append (ob-chat-ai--job-tools job)
                    (list (ob-chat-ai-tools-round-limit-note limit))))
      (ob-chat-ai--job-end job event))
     ((progn
        (setq answers
              (condition-case nil
                  ;; A timer runs with quitting inhibited: let C-g stop
                  ;; the question and the tool blocks.
                  (let ((inhibit-quit nil))
                    (with-current-buffer (ob-chat-ai--job-buffer job)
                      (ob-chat-ai-tools-answer
                     requested (1+ (ob-chat-ai--job-rounds job))
                     (alist-get 'tools (alist-get 'body (ob-chat-ai--job-envelope job))))))
                (quit :quit)))
        (eq answers :quit))
      (ob-chat-ai--job-end job '((type . "error") (kind . "cancelled"))))
     ((ob-chat-ai--job-stopped job)
      (setf (ob-chat-ai--job-tools job)
            (append (ob-chat-ai--job-tools job) (and (listp answers) answers)))
      (ob-chat-ai--job-end job '((type . "error") (kind . "cancelled"))))
     ((stringp answers)
      (setf (ob-chat-ai--job-tools job)
            (append (ob-chat-ai--job-tools job) (list answers)))
      (ob-chat-ai--job-end job event))
     (t
      (cl-incf (ob-chat-ai--job-rounds job))
      (setf (ob-chat-ai--job-tools job) (append (ob-chat-ai--job-tools job) answers)
            (ob-chat-ai--job-envelope job)
            (ob-chat-ai-tools-continue
             (ob-chat-ai--job-envelope job)
             (ob-chat-ai-tools-messages
              requested (mapcar (lambda (answer) (nth 2 answer)) answers)))
            (ob-chat-ai--job-calls job) nil
            (ob-chat-ai--job-deltas job) nil
            (ob-chat-ai--job-thoughts job) nil
            (ob-chat-ai--job-shown job) nil
            (ob-chat-ai--job-chars job) 0
            (ob-chat-ai--job-thought job) 0
            (ob-chat-ai--job-placeholder job)
            (ob-chat-ai-reply-placeholder
             (ob-chat-ai--envelope-model (ob-chat-ai--job-envelope job))))
      (ob-chat-ai--job-show job)
      (ob-chat-ai--job-send job)))))

(defun ob-chat-ai--envelope-model (envelope)
  "Return the model that ENVELOPE names, or nil."
  (alist-get 'model (alist-get 'body envelope)))

(defun ob-chat-ai--after-babel (function &optional instead)
  "Call FUNCTION once Babel has put the result of its current block in place.
That is when Babel runs `org-babel-after-execute-hook' in the
current buffer, before Emacs is next idle.  With INSTEAD, the hook's
own functions do not run this time."
  (let* ((buffer (current-buffer))
         (local (local-variable-p 'org-babel-after-execute-hook))
         (old org-babel-after-execute-hook)
         (done nil)
         (restore (lambda ()
                    (unless done
                      (setq done t)
                      (when (buffer-live-p buffer)
                        (with-current-buffer buffer
                          (if local
                              (setq org-babel-after-execute-hook old)
                            (kill-local-variable 'org-babel-after-execute-hook))))
                      t))))
    (setq-local org-babel-after-execute-hook
                (cons (lambda ()
                        (when (funcall restore)
                          (funcall function)))
                      (and (not instead) (if local old '(t)))))
    ;; Should Babel stop before it runs the hook, forget FUNCTION.
    (run-at-time 0 nil restore)))

(defun ob-chat-ai--take-back-result (before after)
  "Undo the result Babel puts in for its current block, once it is in.
BEFORE is called while that result is still in place, AFTER once it
is gone.  The change leaves no trace in the undo list, and nothing
runs `org-babel-after-execute-hook' for it."
  (let ((undo buffer-undo-list))
    (when (eq undo t)
      (setq buffer-undo-list nil))
    (let ((since buffer-undo-list))
      (ob-chat-ai--after-babel
       (lambda ()
         (funcall before)
         (let ((changes (delq nil (cl-loop for entry on buffer-undo-list
                                           until (eq entry since)
                                           collect (car entry)))))
           (let ((buffer-undo-list t)
                 (inhibit-read-only t))
             (primitive-undo 1 changes)))
         (setq buffer-undo-list (if (eq undo t) t since))
         (funcall after))
       t))))

(defun ob-chat-ai--take-back-placeholder (job again)
  "Show JOB's preview once Babel is done with its placeholder.
Only when `ob-chat-ai--placeholder-goes-in-p' says so has Babel
inserted it: it is taken back, and the hash Babel gave the block
is kept for the finished reply.  The echo
area then says that the reply is awaited, and AGAIN that an earlier
request was cancelled."
  (let ((shown (lambda ()
                 (ob-chat-ai--job-show job)
                 (ob-chat-ai--echo "%s%s" (ob-chat-ai--job-placeholder job)
                                   (if again
                                       " (the earlier request of this block is cancelled)"
                                     "")))))
    (if (not (ob-chat-ai--placeholder-goes-in-p (ob-chat-ai--job-params job)))
        (ob-chat-ai--after-babel shown t)
      (ob-chat-ai--take-back-result
       (lambda ()
         (setf (ob-chat-ai--job-hash job)
               (save-excursion
                 (goto-char (ob-chat-ai--job-block job))
                 (ob-chat-ai--result-hash))))
       shown))))

(defun ob-chat-ai--result-hash ()
  "Return the cache hash on the results line of the block at point, or nil."
  (save-excursion
    (let ((where (org-babel-where-is-src-block-result)))
      (when where
        (goto-char where)
        (let ((case-fold-search t))
          (and (looking-at "[ \t]*#\\+results\\(\\[[^]\n]*\\]\\):")
               (match-string-no-properties 1)))))))

(defun ob-chat-ai--set-result-hash (hash)
  "Put HASH, nil for none, on the results line of the block at point."
  (save-excursion
    (let ((where (org-babel-where-is-src-block-result))
          (case-fold-search t))
      (when where
        (goto-char where)
        (when (looking-at "[ \t]*#\\+results\\(\\[[^]\n]*\\]\\)?:")
          (if (match-beginning 1)
              (replace-match (or hash "") t t nil 1)
            (when hash
              (goto-char (1- (match-end 0)))
              (insert hash))))))))

(defun ob-chat-ai--job-buffer (job)
  "Return the buffer of JOB's block, or nil when it is gone."
  (let ((buffer (marker-buffer (ob-chat-ai--job-block job))))
    (and (buffer-live-p buffer) buffer)))

(defun ob-chat-ai--job-delta (job event)
  "Add delta EVENT to JOB and show its text under the block."
  (push event (ob-chat-ai--job-deltas job))
  (let* ((first (eql (alist-get 'choice event) 0))
         (converter (ob-chat-ai--job-converter job))
         (raw (alist-get 'text event)))
    (cl-incf (ob-chat-ai--job-chars job) (length raw))
    (when first
      (push (if converter (ob-chat-ai-convert-feed converter raw) raw)
            (ob-chat-ai--job-shown job))
      (ob-chat-ai--job-news job))))

(defun ob-chat-ai--job-queue (job event)
  "Note queued or started EVENT of JOB, and show where it stands.
It is shown at once when JOB starts or stops waiting; a new count of
the requests ahead shows with the progress, every half second."
  (let ((was-queued (ob-chat-ai--job-queued job)))
    (setf (ob-chat-ai--job-queued job)
          (and (equal (alist-get 'type event) "queued") event))
    (unless (eq (null was-queued) (null (ob-chat-ai--job-queued job)))
      (ob-chat-ai--job-show job))))

(defun ob-chat-ai--job-unsent-p (job event)
  "Return non-nil when final EVENT cancels JOB while it waits in the queue.
Nothing of JOB's reply was sent then, nor has anything come: its
block keeps the result it had."
  (and (equal (alist-get 'kind event) "cancelled")
       (ob-chat-ai--job-queued job)
       (null (ob-chat-ai--job-deltas job))
       (null (ob-chat-ai--job-thoughts job))
       (null (ob-chat-ai--job-tools job))))

(defun ob-chat-ai--job-retry (job event)
  "Note retry EVENT of JOB, counting a 429, and tell the user."
  (when (and (eql (alist-get 'status event) 429)
             (not (ob-chat-ai--job-retried job)))
    (setf (ob-chat-ai--job-retried job) t)
    (when ob-chat-ai--run
      (cl-incf (ob-chat-ai--run-retried ob-chat-ai--run))))
  (ob-chat-ai--report-retry event))

(defun ob-chat-ai--job-waiting-line (job)
  "Return the line shown for JOB before any text: queued, or waiting for the model."
  (let ((queued (ob-chat-ai--job-queued job)))
    (if (not queued)
        (ob-chat-ai--job-placeholder job)
      (let ((wait (alist-get 'wait queued)))
        (format "chat-ai: queued, %d ahead%s" (alist-get 'ahead queued)
                (if (numberp wait)
                    (format " (the server asks to wait %.1fs)" wait)
                  ""))))))

(defun ob-chat-ai--job-reasoning (job event)
  "Add reasoning EVENT to JOB, and count it in the preview until the reply comes."
  (push event (ob-chat-ai--job-thoughts job))
  (cl-incf (ob-chat-ai--job-thought job) (length (alist-get 'text event)))
  (ob-chat-ai--job-news job))

(defun ob-chat-ai--job-news (job)
  "Note that JOB's preview is out of date, to be drawn with the others soon.
Text is not drawn as each event comes: with many replies streaming,
drawing them all at every event would leave no time for anything else."
  (setf (ob-chat-ai--job-stale job) t)
  (unless ob-chat-ai--repaint-timer
    (setq ob-chat-ai--repaint-timer
          (run-at-time ob-chat-ai--repaint-delay nil #'ob-chat-ai--repaint))))

(defun ob-chat-ai--repaint-period ()
  "Return the seconds each preview waits at least between two drawings.
It grows with the number of replies streaming, so that drawing them
takes about the same time however many there are."
  (max 0.1 (* 0.002 (length ob-chat-ai--jobs))))

(defun ob-chat-ai--repaint ()
  "Draw the out-of-date previews, those drawn longest ago first, for a short while.
Those that are left, or were drawn too recently, are drawn in a
later round."
  (setq ob-chat-ai--repaint-timer nil)
  (let* ((now (float-time))
         (deadline (+ now ob-chat-ai--repaint-budget))
         (due (- now (ob-chat-ai--repaint-period)))
         (left nil))
    (dolist (job (sort (seq-filter #'ob-chat-ai--job-stale ob-chat-ai--jobs)
                       (lambda (a b) (< (ob-chat-ai--job-shown-at a)
                                        (ob-chat-ai--job-shown-at b)))))
      (if (and (<= (ob-chat-ai--job-shown-at job) due)
               (< (float-time) deadline))
          (ob-chat-ai--job-show job)
        (setq left t)))
    (when (and left (not ob-chat-ai--repaint-timer))
      (setq ob-chat-ai--repaint-timer
            (run-at-time ob-chat-ai--repaint-delay nil #'ob-chat-ai--repaint)))))

(defun ob-chat-ai--job-show (job)
  "Show the text of JOB so far under its block, without changing the buffer.
The text is an overlay's: it is not saved, read or undone.  Long
replies show their end, and long lines are broken.  Where the block
ends is read again only when the buffer has changed since.  A job
dropped, its block run again, shows nothing."
  (setf (ob-chat-ai--job-shown-at job) (float-time)
        (ob-chat-ai--job-stale job) nil)
  (let ((buffer (ob-chat-ai--job-buffer job)))
    (when (and buffer (not (ob-chat-ai--job-dropped job)))
      (with-current-buffer buffer
        (let ((overlay (ob-chat-ai--job-overlay job))
              (tick (buffer-chars-modified-tick)))
          (unless (and overlay (overlay-buffer overlay)
                       (eql (ob-chat-ai--job-placed job) tick))
            (let ((end (ob-chat-ai--block-end job)))
              (cond
               ((not end) (setq overlay nil))
               (overlay (move-overlay overlay (ob-chat-ai--job-block job) end))
               (t (setq overlay (make-overlay (ob-chat-ai--job-block job) end nil t nil))
                  (setf (ob-chat-ai--job-overlay job) overlay)))
              (when end
                (setf (ob-chat-ai--job-placed job) tick))))
          (when overlay
            (overlay-put overlay 'after-string
                         (ob-chat-ai--preview job))))))))

(defun ob-chat-ai--block-end (job)
  "Return the end of the #+end_src line of JOB's block, or nil when it is gone.
This is looked for in the text, as Org's parser does, not by parsing
the section around the block: with many replies streaming, that
would be done for each of them at every change of the buffer."
  (when (ob-chat-ai--job-block-in-place-p job)
    (save-excursion
      (save-restriction
        (widen)
        (goto-char (ob-chat-ai--job-block job))
        (forward-line)
        (let ((case-fold-search t))
          (and (re-search-forward
                "^[ \t]*#\\+\\(?:\\(end\\)_src[ \t]*$\\|begin_src[ \t]\\)" nil t)
               (match-beginning 1)
               (point)))))))

(defun ob-chat-ai--job-block-in-place-p (job)
  "Return non-nil when a chat-ai #+begin_src line is still where JOB's block was.
This is the quick look taken while the reply streams;
`ob-chat-ai--job-block-live-p' asks Org before the reply is put in."
  (let ((buffer (ob-chat-ai--job-buffer job)))
    (and buffer
         (with-current-buffer buffer
           (save-excursion
             (save-restriction
               (widen)
               (goto-char (ob-chat-ai--job-block job))
               (let ((case-fold-search t))
                 (and (bolp)
                      (looking-at-p "[ \t]*#\\+begin_src[ \t]+chat-ai\\([ \t]\\|$\\)")))))))))

(defun ob-chat-ai--preview (job)
  "Return the preview of JOB's reply as it streams, as fixed-width lines.
It shows the last `ob-chat-ai--preview-limit' characters, after a
\"…\" line when there were more, with lines broken at
`ob-chat-ai--preview-line-width'.  It is put together in a buffer
kept for that, so that drawing it makes one string, not one per line."
  (with-current-buffer (get-buffer-create " *chat-ai preview*")
    (erase-buffer)
    (let ((left (ob-chat-ai--job-shown job))
          (cut nil))
      (while (and left (< (buffer-size) ob-chat-ai--preview-limit))
        (goto-char (point-min))
        (insert (pop left)))
      (when (or left (> (buffer-size) ob-chat-ai--preview-limit))
        (setq cut t)
        (delete-region (point-min) (- (point-max) ob-chat-ai--preview-limit)))
      (if (= (buffer-size) 0)
          (insert (if (> (ob-chat-ai--job-thought job) 0)
                      (ob-chat-ai-reply-thinking (ob-chat-ai--job-thought job))
                    (ob-chat-ai--job-waiting-line job)))
        (goto-char (point-min))
        (when cut
          (insert "…\n")))
      (goto-char (point-min))
      (ob-chat-ai--preview-prefix-lines)
      (put-text-property (point-min) (point-max) 'face 'org-code)
      (goto-char (point-min))
      (insert "\n")
      (goto-char (point-max))
      (insert (propertize (format "  [%s]" (ob-chat-ai--job-progress job))
                          'face 'shadow))
      (buffer-string))))

(defun ob-chat-ai--preview-prefix-lines ()
  "Put \": \" before each line from point on, breaking lines that are too long.
A line longer than `ob-chat-ai--preview-line-width' goes on in the
next line."
  (let ((done nil))
    (while (not done)
      (insert ": ")
      (let ((end (line-end-position)))
        (cond
         ((> (- end (point)) ob-chat-ai--preview-line-width)
          (forward-char ob-chat-ai--preview-line-width)
          (insert "\n"))
         ((= end (point-max)) (setq done t))
         (t (goto-char (1+ end))))))))

(defun ob-chat-ai--job-block-live-p (job)
  "Return non-nil when JOB's block is still where it was, in a live buffer."
  (let ((buffer (ob-chat-ai--job-buffer job))
        (block (ob-chat-ai--job-block job)))
    (and buffer
         (with-current-buffer buffer
           (save-excursion
             (save-restriction
               (widen)
               (goto-char block)
               (let ((element (ob-chat-ai--element-at-point)))
                 (and (eq (org-element-type element) 'src-block)
                      (equal (org-element-property :language element) "chat-ai")
                      (= (org-element-property :post-affiliated element) block)))))))))

(defun ob-chat-ai--job-finish (job event)
  "End JOB with its final EVENT: put the finished reply through Babel.
While a chat-ai block is being run or a tool's question is asked,
wait until that is over; a job that was dropped has nothing to put,
and ends at once.  Replies that end together wait in
`ob-chat-ai--ended' and go in one at a time."
  (cond
   ((ob-chat-ai--job-dropped job) (ob-chat-ai--job-end job event))
   ;; Many replies ending at once are put in place one at a time, in
   ;; the order they came, with a pause between them for timers and keys.
   ((or (ob-chat-ai--replies-wait-p) ob-chat-ai--ended
        (< (float-time) (+ ob-chat-ai--last-end ob-chat-ai--end-spacing)))
    (setq ob-chat-ai--ended (nconc ob-chat-ai--ended (list (cons job event))))
    (ob-chat-ai--schedule-ended))
   (t (ob-chat-ai--job-end-now job event))))

(defun ob-chat-ai--job-end-now (job event)
  "End JOB with EVENT now, and note when, for the next reply to wait a little."
  (unwind-protect (ob-chat-ai--job-end job event)
    (setq ob-chat-ai--last-end (float-time))))

(defun ob-chat-ai--schedule-ended ()
  "Arrange for the next waiting finished reply to be put in place soon."
  (unless ob-chat-ai--ended-timer
    (setq ob-chat-ai--ended-timer
          (run-at-time (if (ob-chat-ai--replies-wait-p) 0.05 ob-chat-ai--end-spacing)
                       nil #'ob-chat-ai--put-ended))))

(defun ob-chat-ai--replies-wait-p ()
  "Return non-nil when a finished reply must wait to be put in place.
It must while a chat-ai block is being run, and while a tool's
question is asked: putting a reply in would change the buffer under
the question, and Babel's messages would hide it."
  (or ob-chat-ai--executing ob-chat-ai-tools--asking))

(defun ob-chat-ai--put-ended ()
  "Put the first waiting finished reply in place, unless it must wait still."
  (setq ob-chat-ai--ended-timer nil)
  (if (ob-chat-ai--replies-wait-p)
      (ob-chat-ai--schedule-ended)
    (let ((next (pop ob-chat-ai--ended)))
      (unwind-protect
          (when next
            (ob-chat-ai--job-end-now (car next) (cdr next)))
        (when ob-chat-ai--ended
          (ob-chat-ai--schedule-ended))))))

(defun ob-chat-ai--job-end (job event)
  "End JOB with its final EVENT now: put the finished reply through Babel.
A reply that asks to run the block's tools goes on in another round."
  (if (ob-chat-ai--job-tool-round-p job event)
      (ob-chat-ai--job-next-round job event)
    (ob-chat-ai--job-done job event)))

(defun ob-chat-ai--job-done (job event)
  "End JOB with its final EVENT: put the finished reply through Babel.
Should that fail, the echo area says why, and the job ends all the
same: its preview goes, and the blocks waiting for it go on."
  (setq ob-chat-ai--jobs (delq job ob-chat-ai--jobs))
  (let ((failure nil))
    (unwind-protect
        (unless (ob-chat-ai--job-dropped job)
          (let* ((texts (ob-chat-ai--choice-texts (ob-chat-ai--job-deltas job)
                                                  (ob-chat-ai--job-params job)))
                 (params (ob-chat-ai--job-params job))
                 (unsent (ob-chat-ai--job-unsent-p job event))
                 (echo (if unsent
                           "chat-ai: cancelled before it was sent; the block's result is unchanged"
                         (ob-chat-ai-reply-echo event))))
            (condition-case err
                (cond
                 ((equal (alist-get 'kind event) "invalid"))
                 (unsent)
                 ((ob-chat-ai--job-block-live-p job)
                  (ob-chat-ai--job-insert
                   job
                   (ob-chat-ai--reply-text
                    texts event params
                    (let ((converter (ob-chat-ai--job-converter job)))
                      (and converter (ob-chat-ai-convert-level converter)))
                    (ob-chat-ai--choice-thinking (ob-chat-ai--job-thoughts job))
                    (ob-chat-ai--job-tools job))
                   (ob-chat-ai-reply-complete-p texts event))
                  (when (or (ob-chat-ai--job-tools job)
                            (and (ob-chat-ai--job-thoughts job)
                                 (ob-chat-ai-reply-shows-reasoning-p params)))
                    (ob-chat-ai--fold-reasoning (ob-chat-ai--job-block job)))))
              (error (setq failure (error-message-string err))))
            (ob-chat-ai--echo
             "%s" (cond
                   (failure (format "chat-ai: the reply could not be put in its block: %s"
                                    failure))
                   (echo)
                   (t (format "chat-ai: answered in %.1fs"
                              (- (float-time) (ob-chat-ai--job-started job))))))))
      (ob-chat-ai--count-end (cond (failure '((type . "error")))
                                   ((ob-chat-ai--job-dropped job) '((kind . "cancelled")))
                                   (t event)))
      (ob-chat-ai--job-forget job)
      (let ((ob-chat-ai--run-goes-on t))
        (run-hook-with-args 'ob-chat-ai--after-job-hook job))
      (unless ob-chat-ai--jobs
        (ob-chat-ai--show-summary)))))

(defun ob-chat-ai--count-end (event)
  "Count the end of a job with final EVENT in the current run."
  (when ob-chat-ai--run
    (let ((run ob-chat-ai--run))
      (pcase (list (alist-get 'type event) (alist-get 'kind event))
        (`("done" ,_) (cl-incf (ob-chat-ai--run-answered run)))
        (`(,_ "cancelled") (cl-incf (ob-chat-ai--run-cancelled run)))
        (_ (cl-incf (ob-chat-ai--run-failed run)))))))

(defun ob-chat-ai-progress-summary ()
  "Return one line counting how the blocks of the latest run ended, or nil."
  (let ((run ob-chat-ai--run))
    (when run
      (format "%d answered, %d failed, %d retried after 429%s"
              (ob-chat-ai--run-answered run) (ob-chat-ai--run-failed run)
              (ob-chat-ai--run-retried run)
              (let ((cancelled (ob-chat-ai--run-cancelled run)))
                (if (> cancelled 0) (format ", %d cancelled" cancelled) ""))))))

(defun ob-chat-ai--show-summary ()
  "Say how the run that just ended went, when it ran more than one block."
  (when (and ob-chat-ai--run (> (ob-chat-ai--run-started ob-chat-ai--run) 1))
    (ob-chat-ai--echo "chat-ai: %s" (ob-chat-ai-progress-summary))))

(defun ob-chat-ai--echo (format &rest args)
  "Show FORMAT with ARGS in the echo area, unless a tool's question is there."
  (unless ob-chat-ai-tools--asking
    (apply #'message format args)))

(defun ob-chat-ai--job-insert (job text complete)
  "Put TEXT in the results of JOB's block, through Babel's result handling.
All of it is one change to undo.  With :cache yes, the block's hash
goes with TEXT only when it is a COMPLETE reply.  TEXT with a very
long line goes in an example block, never in fixed-width lines."
  (with-current-buffer (ob-chat-ai--job-buffer job)
    (save-excursion
      (save-restriction
        (widen)
        (goto-char (ob-chat-ai--job-block job))
        (let ((info (org-babel-get-src-block-info 'no-eval (ob-chat-ai--element-at-point)))
              (ob-chat-ai--finished-reply text)
              (org-confirm-babel-evaluate nil)
              (org-babel-min-lines-for-block-output
               (if (ob-chat-ai-reply-long-line-p text) 0 org-babel-min-lines-for-block-output))
              (change (progn (undo-boundary) (prepare-change-group))))
          (setf (nth 1 info) (ob-chat-ai--job-body job)
                (nth 2 info) (cons '(:noweb . "no")
                                   (assq-delete-all :noweb
                                                    (copy-sequence
                                                     (ob-chat-ai--job-params job)))))
          (activate-change-group change)
          (unwind-protect
              (progn
                (org-babel-execute-src-block t info)
                (when (ob-chat-ai--yes-p (ob-chat-ai--job-params job) :cache)
                  (ob-chat-ai--set-result-hash
                   (and complete (ob-chat-ai--job-hash job)))))
            (undo-amalgamate-change-group change)
            (accept-change-group change)
            (undo-boundary)))))))

(defun ob-chat-ai--fold-reasoning (block)
  "Fold the tool and reasoning blocks at the start of the result of BLOCK's block.
A result that Org does not read as Org (fixed-width lines, an example
block) holds the thinking as text, and stays as it is."
  (with-current-buffer (marker-buffer block)
    (save-excursion
      (goto-char block)
      (let ((result (org-babel-where-is-src-block-result)))
        (when result
          (goto-char result)
          (forward-line)
          (when (looking-at "[ \t]*:results:[ \t]*$")
            (forward-line))
          (let ((case-fold-search t))
            (while (looking-at "[ \t]*#\\+begin_\\(tool\\|reasoning\\)")
              (funcall (if (fboundp 'org-fold-hide-block-toggle)
                           'org-fold-hide-block-toggle
                         'org-hide-block-toggle)
                       t t)
              (goto-char (org-element-property :end (org-element-at-point))))))))))

(defun ob-chat-ai--job-forget (job)
  "Release the marker and the overlay of JOB."
  (when (ob-chat-ai--job-overlay job)
    (delete-overlay (ob-chat-ai--job-overlay job)))
  (set-marker (ob-chat-ai--job-block job) nil))

(defun ob-chat-ai--show-progress ()
  "Show how far each reply has come; drop those whose block is gone.
A block is looked for again only when its buffer has changed since
its preview was placed."
  (dolist (job ob-chat-ai--jobs)
    (let ((buffer (ob-chat-ai--job-buffer job)))
      (if (and buffer
               (eql (ob-chat-ai--job-placed job)
                    (buffer-chars-modified-tick buffer)))
          (ob-chat-ai--job-news job)
        (if (not (ob-chat-ai--job-block-in-place-p job))
            (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))
          (ob-chat-ai--job-news job)))))
  (force-mode-line-update t)
  (unless ob-chat-ai--jobs
    (cancel-timer ob-chat-ai--progress-timer)
    (setq ob-chat-ai--progress-timer nil)))

(defun ob-chat-ai--job-progress (job)
  "Return how long JOB has run and how much it has received, in words."
  (format "%.0fs, %d chars" (- (float-time) (ob-chat-ai--job-started job))
          (ob-chat-ai--job-chars job)))

(defun ob-chat-ai--mode-line ()
  "Return the mode line text saying which replies are on their way.
While more than one block runs, it counts them: running, queued, done
and failed."
  (when ob-chat-ai--jobs
    (if (and ob-chat-ai--run (> (ob-chat-ai--run-started ob-chat-ai--run) 1))
        (ob-chat-ai-progress-line)
      (format " chat-ai[%d: %s]" (length ob-chat-ai--jobs)
              (ob-chat-ai--job-progress (car (last ob-chat-ai--jobs)))))))

(defun ob-chat-ai-progress-line ()
  "Return how the blocks of the current run are doing, as mode line text."
  (let* ((queued (seq-count #'ob-chat-ai--job-queued ob-chat-ai--jobs))
         (run (or ob-chat-ai--run (ob-chat-ai--run-create))))
    (format " chat-ai[%d running, %d queued, %d done, %d failed]"
            (- (length ob-chat-ai--jobs) queued) queued
            (ob-chat-ai--run-answered run) (ob-chat-ai--run-failed run))))

(defun ob-chat-ai--cancel-buffer-jobs ()
  "Cancel the requests of the blocks of the current buffer, which is killed."
  (dolist (job ob-chat-ai--jobs)
    (when (eq (ob-chat-ai--job-buffer job) (current-buffer))
      (setf (ob-chat-ai--job-dropped job) t)
      (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))))

(defun ob-chat-ai-cancel ()
  "Cancel the request of the chat-ai block at point.
The text that had come goes in the results, marked as incomplete; a
request still waiting in the queue was never sent, and its block
keeps the result it had.  A block waiting for the earlier blocks of
its session stops waiting."
  (interactive)
  (let ((job (seq-find #'ob-chat-ai--job-at-point-p ob-chat-ai--jobs)))
    (cond
     (job
      (setf (ob-chat-ai--job-stopped job) t)
      (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))
     ((> (ob-chat-ai--stop-waiting-blocks #'ob-chat-ai--block-at-point-p) 0)
      (message "chat-ai: the block no longer waits for its session; its result is unchanged"))
     (t (ob-chat-ai--user-error "No request is running for the block at point")))))

(declare-function ob-chat-ai--stop-waiting-blocks "ob-chat-ai" (which))

(defun ob-chat-ai--job-at-point-p (job)
  "Return non-nil when point is on JOB's block or its results."
  (and (eq (ob-chat-ai--job-buffer job) (current-buffer))
       (ob-chat-ai--block-at-point-p (ob-chat-ai--job-block job))))

(defun ob-chat-ai--block-at-point-p (block)
  "Return non-nil when point is on the block at BLOCK, or on its results.
BLOCK, a marker or a position of this buffer, is where it starts."
  (and (or (not (markerp block)) (eq (marker-buffer block) (current-buffer)))
       (<= block (point))
       (<= (point) (save-excursion
                     (goto-char block)
                     (let ((where (org-babel-where-is-src-block-result)))
                       (if where
                           (progn (goto-char where) (forward-line) (org-babel-result-end))
                         (org-element-property :end (org-element-at-point))))))))

(defun ob-chat-ai-cancel-all ()
  "Cancel every chat-ai request under way, and every block waiting for its session."
  (interactive)
  (let ((count (+ (length ob-chat-ai--jobs) (ob-chat-ai--stop-waiting-blocks #'always))))
    (mapc (lambda (job)
            (setf (ob-chat-ai--job-stopped job) t)
            (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))
          ob-chat-ai--jobs)
    (message "chat-ai: cancelled %d request%s" count (if (= count 1) "" "s"))))

(provide 'ob-chat-ai-async)

;;; ob-chat-ai-async.el ends here
