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


(cl-defstruct (ob-chat-ai--job (:constructor ob-chat-ai--job-create)
                               (:copier nil))
  "A block whose reply is on its way, and where it is shown."
  (request nil :documentation "The helper request.")
  (block nil :documentation "A marker at the block's #+begin_src line.")
  (body nil :documentation "The body the request was made from.")
  (params nil :documentation "The processed header args of the block.")
  (placeholder nil :documentation "The text Babel put in the results at first.")
  (deltas nil :documentation "The delta events so far, the last one first.")
  (chars 0 :documentation "How many characters have come.")
  (started nil :documentation "When the request started, as a float time.")
  (start nil :documentation "A marker at the start of the streamed text.")
  (end nil :documentation "A marker at the end of the streamed text.")
  (hidden nil :documentation "Non-nil once the streamed text was deleted.")
  (overlay nil :documentation "The overlay showing progress after the text.")
  (converter nil :documentation "The Markdown to Org converter, for :format org.")
  (shown nil :documentation "The text shown of the first choice, the last piece first."))

(defvar ob-chat-ai--jobs nil
  "The blocks whose replies are on their way, the newest first.")

(defvar ob-chat-ai--after-job-hook nil
  "Functions run with no arguments after a job has ended and its reply is in.")

(defun ob-chat-ai--job-block-p (position)
  "Return non-nil when the block at POSITION of this buffer has a running job."
  (seq-some (lambda (job)
              (and (eq (ob-chat-ai--job-buffer job) (current-buffer))
                   (= (ob-chat-ai--job-block job) position)))
            ob-chat-ai--jobs))

(defvar ob-chat-ai--progress-timer nil
  "The timer that updates the progress shown while replies stream.")

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
         (not (seq-intersection '("silent" "none") result-params))
         (ob-chat-ai--at-src-block-p))))

(defun ob-chat-ai--at-src-block-p ()
  "Return non-nil when Babel is running a source block of this buffer.
It is not when it runs a #+CALL: line or an inline block."
  (let ((location org-babel-current-src-block-location))
    (and location
         (or (not (markerp location)) (eq (marker-buffer location) (current-buffer)))
         (save-excursion
           (goto-char location)
           (eq (org-element-type (org-element-at-point)) 'src-block)))))

(defun ob-chat-ai--start-job (envelope body params)
  "Send ENVELOPE for the block with BODY and PARAMS; return a placeholder."
  (let* ((placeholder (ob-chat-ai-reply-placeholder
                       (alist-get 'model (alist-get 'body envelope))))
         (job (ob-chat-ai--job-create
               :block (copy-marker org-babel-current-src-block-location t)
               :body body
               :params params
               :placeholder placeholder
               :started (float-time)
               :converter (and (ob-chat-ai--org-format-p params)
                               (ob-chat-ai-convert-create (ob-chat-ai--heading-level))))))
    (setf (ob-chat-ai--job-request job)
          (ob-chat-ai-process-send
           envelope
           :on-delta (lambda (event) (ob-chat-ai--job-delta job event))
           :on-retry #'ob-chat-ai--report-retry
           :on-finish (lambda (event) (ob-chat-ai--job-finish job event))))
    (push job ob-chat-ai--jobs)
    (add-hook 'kill-buffer-hook #'ob-chat-ai--cancel-buffer-jobs nil t)
    (unless ob-chat-ai--progress-timer
      (setq ob-chat-ai--progress-timer
            (run-at-time 0.5 0.5 #'ob-chat-ai--show-progress)))
    (unless (member '(:eval (ob-chat-ai--mode-line)) global-mode-string)
      (setq global-mode-string
            (append global-mode-string '((:eval (ob-chat-ai--mode-line))))))
    placeholder))

(defun ob-chat-ai--job-buffer (job)
  "Return the buffer of JOB's block, or nil when it is gone."
  (let ((buffer (marker-buffer (ob-chat-ai--job-block job))))
    (and (buffer-live-p buffer) buffer)))

(defun ob-chat-ai--job-delta (job event)
  "Add delta EVENT to JOB and show its text in the results."
  (push event (ob-chat-ai--job-deltas job))
  (let* ((first (eql (alist-get 'choice event) 0))
         (converter (ob-chat-ai--job-converter job))
         (raw (alist-get 'text event))
         (text (if (and first converter) (ob-chat-ai-convert-feed converter raw) raw)))
    (cl-incf (ob-chat-ai--job-chars job) (length raw))
    (when first
      (push text (ob-chat-ai--job-shown job)))
    (when (and first
               (not (ob-chat-ai--job-hidden job))
               (ob-chat-ai--job-buffer job))
      (with-current-buffer (ob-chat-ai--job-buffer job)
        (save-excursion
          (let ((inhibit-read-only t)
                (start (ob-chat-ai--job-start job))
                (end (ob-chat-ai--job-end job)))
            (cond
             ((not end) (ob-chat-ai--job-open-region job))
             ((and (< start end) (eq (char-after start) ?:))
              (goto-char end)
              (insert (ob-chat-ai--fixed-width text)))
             (t (ob-chat-ai--job-hide job)))))))))

(defun ob-chat-ai--job-hide (job)
  "Stop showing JOB's text, which was deleted; drop JOB if its block is gone."
  (setf (ob-chat-ai--job-hidden job) t)
  (set-marker (ob-chat-ai--job-start job) nil)
  (set-marker (ob-chat-ai--job-end job) nil)
  (setf (ob-chat-ai--job-start job) nil
        (ob-chat-ai--job-end job) nil)
  (unless (ob-chat-ai--job-block-live-p job)
    (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))))

(defun ob-chat-ai--fixed-width (text)
  "Return TEXT with each line after the first marked as fixed-width."
  (string-replace "\n" "\n: " text))

(defun ob-chat-ai--job-open-region (job)
  "Put the text of JOB so far where its placeholder is, as fixed-width lines.
Do nothing while the placeholder cannot be found."
  (let ((result (ob-chat-ai--job-result-region job)))
    (when result
      (goto-char (car result))
      (when (search-forward (ob-chat-ai--job-placeholder job) (cdr result) t)
        (let ((start (line-beginning-position)))
          (delete-region start (line-end-position))
          (goto-char start)
          (setf (ob-chat-ai--job-start job) (copy-marker start)
                (ob-chat-ai--job-end job) (copy-marker start t))
          (insert ": " (ob-chat-ai--fixed-width
                        (apply #'concat (reverse (ob-chat-ai--job-shown job)))))
          (setf (ob-chat-ai--job-overlay job)
                (make-overlay start (point) nil nil t)))))))

(defun ob-chat-ai--job-result-region (job)
  "Return (BEGIN . END) of the results of JOB's block, or nil."
  (when (ob-chat-ai--job-block-live-p job)
    (save-excursion
      (goto-char (ob-chat-ai--job-block job))
      (let ((where (org-babel-where-is-src-block-result)))
        (when where
          (goto-char where)
          (forward-line)
          ;; Babel cannot tell where a raw result ends: search its first line.
          (cons (point) (max (org-babel-result-end) (line-end-position))))))))

(defun ob-chat-ai--job-block-live-p (job)
  "Return non-nil when JOB's block is still where it was, in a live buffer."
  (let ((buffer (ob-chat-ai--job-buffer job))
        (block (ob-chat-ai--job-block job)))
    (and buffer
         (with-current-buffer buffer
           (save-excursion
             (goto-char block)
             (let ((element (org-element-at-point)))
               (and (eq (org-element-type element) 'src-block)
                    (equal (org-element-property :language element) "chat-ai")
                    (= (org-element-property :post-affiliated element) block))))))))

(defun ob-chat-ai--job-finish (job event)
  "End JOB with its final EVENT: put the finished reply through Babel."
  (setq ob-chat-ai--jobs (delq job ob-chat-ai--jobs))
  (let ((text (ob-chat-ai--reply-text
               (ob-chat-ai--choice-texts (ob-chat-ai--job-deltas job))
               event (ob-chat-ai--job-params job)
               (let ((converter (ob-chat-ai--job-converter job)))
                 (and converter (ob-chat-ai-convert-level converter))))))
    (when (equal (alist-get 'type event) "done")
      (message "chat-ai: answered in %.1fs" (- (float-time) (ob-chat-ai--job-started job))))
    (when (ob-chat-ai--job-block-live-p job)
      (ob-chat-ai--job-insert job text)))
  (ob-chat-ai--job-forget job)
  (run-hooks 'ob-chat-ai--after-job-hook))

(defun ob-chat-ai--job-insert (job text)
  "Replace the streamed text of JOB by TEXT, through Babel's result handling."
  (with-current-buffer (ob-chat-ai--job-buffer job)
    (save-excursion
      (let ((start (ob-chat-ai--job-start job))
            (end (ob-chat-ai--job-end job)))
        (when start
          (delete-region start (if (eq (char-after end) ?\n) (1+ end) end))))
      (goto-char (ob-chat-ai--job-block job))
      (let ((info (org-babel-get-src-block-info 'no-eval))
            (ob-chat-ai--finished-reply text)
            (org-confirm-babel-evaluate nil))
        (setf (nth 1 info) (ob-chat-ai--job-body job)
              (nth 2 info) (cons '(:noweb . "no")
                                 (assq-delete-all :noweb
                                                  (copy-sequence
                                                   (ob-chat-ai--job-params job)))))
        (org-babel-execute-src-block t info)))))

(defun ob-chat-ai--job-forget (job)
  "Release the markers and the overlay of JOB."
  (when (ob-chat-ai--job-overlay job)
    (delete-overlay (ob-chat-ai--job-overlay job)))
  (dolist (marker (list (ob-chat-ai--job-start job)
                        (ob-chat-ai--job-end job)
                        (ob-chat-ai--job-block job)))
    (when marker
      (set-marker marker nil))))

(defun ob-chat-ai--show-progress ()
  "Show how far each reply has come; drop those whose block is gone."
  (dolist (job ob-chat-ai--jobs)
    (if (not (ob-chat-ai--job-block-live-p job))
        (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))
      (let ((overlay (ob-chat-ai--job-overlay job)))
        (when overlay
          (overlay-put overlay 'after-string
                       (propertize (format "  [%s]" (ob-chat-ai--job-progress job))
                                   'face 'shadow))))))
  (force-mode-line-update t)
  (unless ob-chat-ai--jobs
    (cancel-timer ob-chat-ai--progress-timer)
    (setq ob-chat-ai--progress-timer nil)))

(defun ob-chat-ai--job-progress (job)
  "Return how long JOB has run and how much it has received, in words."
  (format "%.0fs, %d chars" (- (float-time) (ob-chat-ai--job-started job))
          (ob-chat-ai--job-chars job)))

(defun ob-chat-ai--mode-line ()
  "Return the mode line text saying which replies are on their way."
  (when ob-chat-ai--jobs
    (format " chat-ai[%d: %s]" (length ob-chat-ai--jobs)
            (ob-chat-ai--job-progress (car (last ob-chat-ai--jobs))))))

(defun ob-chat-ai--cancel-buffer-jobs ()
  "Cancel the requests of the blocks of the current buffer."
  (dolist (job ob-chat-ai--jobs)
    (when (eq (ob-chat-ai--job-buffer job) (current-buffer))
      (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))))

(defun ob-chat-ai-cancel ()
  "Cancel the request of the chat-ai block at point.
The text that had come stays in the results, marked as incomplete."
  (interactive)
  (let ((job (seq-find #'ob-chat-ai--job-at-point-p ob-chat-ai--jobs)))
    (unless job
      (ob-chat-ai--user-error "No request is running for the block at point"))
    (ob-chat-ai-process-cancel (ob-chat-ai--job-request job))))

(defun ob-chat-ai--job-at-point-p (job)
  "Return non-nil when point is on JOB's block or its streamed text."
  (and (eq (ob-chat-ai--job-buffer job) (current-buffer))
       (<= (ob-chat-ai--job-block job) (point))
       (<= (point) (or (ob-chat-ai--job-end job)
                       (save-excursion
                         (goto-char (ob-chat-ai--job-block job))
                         (org-element-property :end (org-element-at-point)))))))

(defun ob-chat-ai-cancel-all ()
  "Cancel every chat-ai request under way."
  (interactive)
  (let ((count (length ob-chat-ai--jobs)))
    (mapc (lambda (job) (ob-chat-ai-process-cancel (ob-chat-ai--job-request job)))
          ob-chat-ai--jobs)
    (message "chat-ai: cancelled %d request%s" count (if (= count 1) "" "s"))))

(provide 'ob-chat-ai-async)

;;; ob-chat-ai-async.el ends here
